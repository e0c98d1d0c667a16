"""Building the real parts from Settings: the codec, the inference client and the job backend.

Local mode loads the tokenizer and the engine into this process (one machine); remote mode talks to
the tokenizer service over gRPC and to the Ray Serve app over HTTP (the gateway image).
"""

from __future__ import annotations

import logging

from chatforge.artifacts import ArtifactError, ArtifactStore
from gateway.codec import LocalCodec, TextCodec, connect_grpc
from gateway.deployer import ServeSwitch
from gateway.inference import InferenceClient
from gateway.jobs.backend import JobBackend
from gateway.settings import Settings

log = logging.getLogger(__name__)


async def build_codec(settings: Settings) -> TextCodec:
    if settings.mode == "remote":
        return await connect_grpc(settings.tokenizer_target, wait_s=30.0)
    from chatforge.tokenizer import Tokenizer

    store = ArtifactStore.from_env(settings.artifacts_root)
    return LocalCodec(Tokenizer.load(store.find_tokenizer(local_tokenizer_name(settings, store))))


def local_tokenizer_name(settings: Settings, store: ArtifactStore) -> str:
    """The tokenizer set in the settings, else the one the served checkpoint was trained with."""
    if settings.tokenizer_name:
        return settings.tokenizer_name
    if settings.checkpoint:
        from chatforge.checkpoint import read_meta

        name = read_meta(store.resolve_checkpoint(settings.checkpoint)).get("tokenizer")
        if name:
            return str(name)
    known = store.tokenizers()
    if len(known) == 1:  # one machine, one tokenizer: nothing to choose
        return known[0]
    raise ArtifactError(
        f"which tokenizer? {store.root} holds {', '.join(known) or 'none'}: set CHATFORGE_GATEWAY_TOKENIZER_NAME "
        "or serve a checkpoint (--checkpoint run/stage) whose metadata names one"
    )


async def build_inference(settings: Settings) -> InferenceClient:
    if settings.mode == "remote":
        from gateway.inference import InferenceUnavailable
        from gateway.remote_inference import RemoteInference

        remote = RemoteInference(
            settings.inference_url, model_id=settings.model_id, switch=build_switch(settings),
            deploy_timeout_s=settings.deploy_timeout_s,
        )  # fmt: skip
        try:
            await remote.refresh()
        except InferenceUnavailable as e:
            log.warning("%s: chat answers 503 until it does", e)
        return remote
    from gateway.local_inference import LocalInference

    inference = LocalInference(
        model_id=settings.model_id, artifacts_root=settings.artifacts_root, sandbox_url=settings.sandbox_url
    )
    if settings.checkpoint:
        await inference.deploy(settings.checkpoint)
    else:
        log.warning(
            "no checkpoint given (CHATFORGE_GATEWAY_CHECKPOINT): chat answers 503 until one is deployed"
        )
    return inference


def build_switch(settings: Settings) -> ServeSwitch | None:
    """Where deployments write the served checkpoint: the RayService when one is named (it owns
    the Serve config on Kubernetes), else Serve's REST API when its dashboard is given."""
    if settings.kube_rayservice:
        from gateway.deployer import RayServiceSwitch, kube_api_client

        return RayServiceSwitch(
            kube_api_client(settings.kube_config), settings.kube_namespace, settings.kube_rayservice,
            settings.serve_app, settings.serve_deployment,
        )  # fmt: skip
    if settings.serve_admin_url:
        from gateway.deployer import ServeApiSwitch

        return ServeApiSwitch(settings.serve_admin_url, settings.serve_app, settings.serve_deployment)
    return None


def build_backend(settings: Settings) -> JobBackend:
    if settings.job_backend == "kuberay":
        from gateway.jobs.kuberay import KubeRayBackend

        return KubeRayBackend(settings)
    from gateway.jobs.ray_jobs import RayJobsBackend

    return RayJobsBackend(
        settings.ray_address, name=settings.job_backend, local_temp_dir=settings.ray_temp_dir
    )
