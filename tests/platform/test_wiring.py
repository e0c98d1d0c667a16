"""The chart's wiring against the code: each service's settings load from the environment the chart
gives it, and every command a pod runs is a real `chatforge` subcommand with real flags."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml

from chatforge.cli import build_parser

from .chart import FULL_VALUES, RELEASE, by_kind, crd_schema, pod_templates, render
from .dockerfile import check_command, command, dockerfile_of

FULL = ("-f", str(FULL_VALUES))
SECRET_VALUE = "a-pepper-from-the-secret"


def container_env(objects: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    """What the container's process sees: envFrom ConfigMaps, then env (Secrets read as a fixed
    value), with `$(VAR)` expanded from the variables before it, as the kubelet does."""
    maps = {c["metadata"]["name"]: c["data"] for c in by_kind(objects, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        value = var["value"] if "value" in var else SECRET_VALUE
        env[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)
    return env


def deployment_container(objects: tuple[dict[str, Any], ...], component: str) -> dict[str, Any]:
    (deployment,) = [
        d for d in by_kind(objects, "Deployment") if d["metadata"]["name"].endswith(f"-{component}")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def assert_known_fields(env: dict[str, str], prefix: str, fields: set[str]) -> None:
    # pydantic-settings ignores unknown variables: a misspelt one would silently do nothing.
    unknown = [k for k in env if k.startswith(prefix) and k[len(prefix) :].lower() not in fields]
    assert not unknown, f"no such setting: {unknown}"


def test_gateway_settings_load_from_the_chart_environment(
    clean_env: Callable[[dict[str, str]], None],
) -> None:
    from gateway.settings import ENV_PREFIX, Settings, load_settings

    objects = render(*FULL)
    env = container_env(objects, deployment_container(objects, "gateway"))
    assert_known_fields(env, ENV_PREFIX, set(Settings.model_fields))
    clean_env(env)
    settings = load_settings()
    assert (settings.host, settings.port, settings.mode) == ("0.0.0.0", 8000, "remote")
    assert settings.auth_required and settings.key_pepper == SECRET_VALUE
    # the password from the Secret, put into the URL by the kubelet
    assert settings.redis_url == f"redis://:{SECRET_VALUE}@{RELEASE}-chatforge-redis:6379/0"
    assert settings.tokenizer_target == f"{RELEASE}-chatforge-tokenizer:50051"
    assert settings.inference_url == f"http://{RELEASE}-chatforge-inference-serve-svc:8000"
    assert settings.artifacts_root == "/artifacts"
    assert (settings.job_backend, settings.kube_namespace) == ("kuberay", "chatforge")
    assert settings.kube_image == "registry.example.com/chatforge/trainer:0.1.0"
    assert settings.rate_requests_per_min == 600.0  # from extraEnv
    # jobs mount the chart's artifact claim, so their checkpoints outlive their pods
    pod_claims = {
        v["persistentVolumeClaim"]["claimName"]
        for o in objects
        if o["kind"] == "Deployment"
        for v in o["spec"]["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    assert settings.kube_artifacts_claim in pod_claims  # the services' own artifact store


def test_tokenizer_settings_load_from_the_chart_environment(
    clean_env: Callable[[dict[str, str]], None],
) -> None:
    from tokenizer_svc.settings import ENV_PREFIX, Settings, load_settings

    objects = render(*FULL)
    env = container_env(objects, deployment_container(objects, "tokenizer"))
    assert_known_fields(env, ENV_PREFIX, set(Settings.model_fields))
    clean_env(env)
    settings = load_settings()
    assert (settings.host, settings.port, settings.metrics_port) == ("0.0.0.0", 50051, 9464)
    assert (settings.name, settings.artifacts_root, settings.drain_s) == ("default", "/artifacts", 5.0)


def test_sandbox_settings_load_from_the_chart_environment(
    clean_env: Callable[[dict[str, str]], None],
) -> None:
    from sandbox.settings import ENV_PREFIX, Settings, load_settings

    objects = render(*FULL)
    env = container_env(objects, deployment_container(objects, "sandbox"))
    assert_known_fields(env, ENV_PREFIX, set(Settings.model_fields))
    assert not any(k.startswith(("REDIS", "CHATFORGE_GATEWAY")) for k in env), "the sandbox needs no secrets"
    clean_env(env)
    settings = load_settings()
    assert (settings.host, settings.port, settings.mode) == ("0.0.0.0", 8092, "namespaces")
    assert settings.uid_base + settings.max_concurrent < 65536  # inside the pod's user namespace


# The folder whose Dockerfile each Deployment's image is built from (its entrypoint is the command).
DEPLOYMENT_IMAGES = {
    "gateway": "services/gateway",
    "tokenizer": "tokenizer-svc",
    "sandbox": "services/sandbox",
}


@pytest.mark.parametrize("component", sorted(DEPLOYMENT_IMAGES))
def test_deployments_run_their_images_entrypoint(component: str) -> None:
    container = deployment_container(render(*FULL), component)
    assert "command" not in container and "args" not in container, "the image's entrypoint is the one command"
    assert check_command(command(dockerfile_of(DEPLOYMENT_IMAGES[component]))) is None


def test_training_example_runs_a_real_pipeline_command() -> None:
    (job,) = by_kind(render(*FULL), "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["chatforge", "pipeline"]
    assert check_command(argv) is None


def test_training_example_runs_one_worker_per_gpu() -> None:
    (job,) = by_kind(render(*FULL), "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[1:])
    assert (args.run, args.preset, args.workers, args.redo) == ("example", "d26", 16, ["sft"])
    (workers,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    pod = workers["template"]["spec"]
    assert workers["replicas"] == 2  # gateway.jobs.presets.d26: 2 pods x 8 GPUs, like the gateway's d26 jobs
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert (
        pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["priorityClassName"] == "training"
    )
    assert pod["affinity"]["nodeAffinity"]  # the GPU pool's, from gateway.jobs.gpuPool


@pytest.mark.parametrize("values", [(), FULL], ids=["default", "full"])
def test_gateway_rayjobs_fit_the_chart(
    values: tuple[str, ...], clean_env: Callable[[dict[str, str]], None]
) -> None:
    """The RayJobs the gateway creates under the chart's settings and job clusters file, for every
    stage and preset: valid for KubeRay's CRD (strict), the chart's trainer image, workers on the GPU
    pool with one Ray Train worker per GPU, restricted pods, Redis's password from its Secret only,
    and labelled so the chart's NetworkPolicies and PodMonitor find them."""
    from gateway.jobs.job_clusters import JobClusters
    from gateway.jobs.kuberay import MAX_RAYJOB_NAME, fit_spec, rayjob_manifest
    from gateway.jobs.service import JobEnv
    from gateway.jobs.spec import JobRecord, entrypoint
    from gateway.settings import load_settings

    from chatforge.contracts.jobs import JobSpec

    objects = render(*values)
    gateway = deployment_container(objects, "gateway")
    env = container_env(objects, gateway)
    clean_env(env)
    settings = load_settings()
    (clusters_map,) = [
        c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-job-clusters")
    ]
    mount = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}["job-clusters"]
    (name,) = clusters_map["data"]
    assert settings.kube_clusters_file == f"{mount}/{name}"
    clusters = JobClusters.model_validate(yaml.safe_load(clusters_map["data"][name]))
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    training = policies[f"{RELEASE}-chatforge-training-ray"]["podSelector"]["matchLabels"]
    submitter = policies[f"{RELEASE}-chatforge-training-submitter"]["podSelector"]["matchLabels"]
    schema = crd_schema("ray.io/v1", "RayJob")
    for stage, config, gpus in (
        ("base", {"preset": "d20"}, 8),
        ("sft", {"preset": "d26"}, 16),
        ("base", {"preset": "d12"}, 2 if values else 1),  # full values: d12 on 2 GPUs
        ("pipeline", {"preset": "tiny"}, 0),
        ("rl", {}, 2 if values else 1),  # the default preset's (d12) cluster
        ("tokenizer", {"preset": "d20"}, 0),
    ):
        spec = fit_spec(JobSpec.model_validate({"stage": stage, "run": "r1", "config": config}), clusters)
        record = JobRecord(
            id="job-0123456789ab", stage=stage, run="r1", backend="kuberay", owner="k",
            config=spec.config.model_dump(mode="json", exclude_unset=True),
            entrypoint=entrypoint(settings.job_command, spec, "job-0123456789ab"),
        )  # fmt: skip
        job = rayjob_manifest(
            record, JobEnv(settings.redis_url, settings.artifacts_root).as_dict(), settings, clusters
        )
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(job))
        assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:3]]
        assert SECRET_VALUE not in json.dumps(job), "a secret was written into the RayJob"
        assert len(job["metadata"]["name"]) <= MAX_RAYJOB_NAME
        argv = shlex.split(record.entrypoint)
        if gpus:
            assert argv[argv.index("--workers") + 1] == str(gpus), argv
            assert stage == "pipeline" or "--gpu" in argv
        cluster = job["spec"]["rayClusterSpec"]
        assert (
            sum(
                int(g["replicas"])
                * int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0))
                for g in cluster.get("workerGroupSpecs", [])
            )
            == gpus
        )
        for group in cluster.get("workerGroupSpecs", []):
            pod = group["template"]["spec"]
            if gpus:
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
                assert ("affinity" in pod) == bool(values) and ("priorityClassName" in pod) == bool(values)
                dshm = {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]
                assert dshm == ({"medium": "Memory", "sizeLimit": "64Gi"} if values else {"medium": "Memory"})
        for template in pod_templates(job):
            assert training.items() <= template["metadata"]["labels"].items()
            (container,) = template["spec"]["containers"]
            assert container["image"] == settings.kube_image
            seen = container_env(objects, container)
            assert seen["CHATFORGE_ARTIFACTS"] == "/artifacts"
            assert seen["REDIS_URL"] == settings.redis_url  # the same Redis, password from the same Secret
            assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        sub = job["spec"]["submitterPodTemplate"]
        assert submitter.items() <= sub["metadata"]["labels"].items()
        assert job["metadata"]["namespace"] == "chatforge"


def test_rayservice_args_are_valid_inference_settings(clean_env: Callable[[dict[str, str]], None]) -> None:
    """The RayService's `serveConfigV2` args reach `inference_svc.serve:app_builder`, which loads them
    as the inference service's Settings: a misspelt or out-of-range arg would fail the deploy."""
    from inference_svc.settings import load_settings

    (service,) = by_kind(render(*FULL), "RayService")
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    assert app["import_path"] == "inference_svc.serve:app_builder"
    clean_env({})
    settings = load_settings(**app["args"])
    assert settings.checkpoint == app["args"]["checkpoint"] and settings.sandbox_url
