"""docker-compose.yml: valid, built from the project's Dockerfiles, and consistent with the chart."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .chart import CHART, ROOT
from .dockerfile import DEPLOYABLES, check_command, entrypoint

COMPOSE = ROOT / "docker-compose.yml"
PEPPER = "a-pepper-for-the-compose-test"
INTERPOLATION = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, as `docker compose config` resolves them."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if kind == "?":
            raise ValueError(f"{name} is required: {rest}")
        return rest if kind == "-" else ""

    return INTERPOLATION.sub(one, value)


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    env = {"CHATFORGE_KEY_PEPPER": PEPPER} if env is None else env

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return interpolate(node, env) if isinstance(node, str) else node

    return walk(yaml.safe_load(COMPOSE.read_text()))


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service.get("environment", {}).items()}


MONITORING = ("prometheus", "grafana")
SERVICES = sorted(yaml.safe_load(COMPOSE.read_text())["services"])


def test_compose_config_validates_with_the_docker_client() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here: `docker compose config` cannot run")
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "CHATFORGE_KEY_PEPPER": PEPPER},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr


def test_compose_file_has_the_whole_stack() -> None:
    services = load()["services"]
    assert set(services) == {"redis", "tokenizer", "sandbox", "inference", "ray", "gateway", *MONITORING}
    assert all(services[name]["profiles"] == ["monitoring"] for name in MONITORING)
    with pytest.raises(ValueError, match="CHATFORGE_KEY_PEPPER is required"):
        load({})


@pytest.mark.parametrize("name", SERVICES)
def test_service_builds_from_an_existing_dockerfile(name: str) -> None:
    service = load()["services"][name]
    if "build" not in service:
        assert name in ("redis", *MONITORING), f"{name}: only Redis and monitoring come from public images"
        return
    assert service["build"]["context"] == ".", "images are built from the repository root"
    dockerfile = ROOT / service["build"]["dockerfile"]
    assert dockerfile.is_file(), f"{name}: {service['build']['dockerfile']} does not exist"
    assert dockerfile.parent.relative_to(ROOT).as_posix() in DEPLOYABLES, f"{name}: not a deployable's image"
    assert service["image"].startswith("chatforge/")


def test_ports_match_the_chart() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    services = load()["services"]
    tokenizer = environment(services["tokenizer"])
    assert int(tokenizer["CHATFORGE_TOKENIZER_PORT"]) == values["tokenizer"]["port"]
    assert int(tokenizer["CHATFORGE_TOKENIZER_METRICS_PORT"]) == values["tokenizer"]["metricsPort"]
    assert int(environment(services["sandbox"])["CHATFORGE_SANDBOX_PORT"]) == values["sandbox"]["port"]
    gateway = environment(services["gateway"])
    assert int(gateway["CHATFORGE_GATEWAY_PORT"]) == values["gateway"]["port"]
    assert gateway["CHATFORGE_GATEWAY_TOKENIZER_TARGET"] == f"tokenizer:{values['tokenizer']['port']}"
    assert (
        gateway["CHATFORGE_GATEWAY_INFERENCE_URL"] == f"http://inference:{values['inference']['servePort']}"
    )
    assert gateway["REDIS_URL"] == f"redis://redis:{values['redis']['port']}/0"
    assert gateway["CHATFORGE_ARTIFACTS"] == values["artifacts"]["mountPath"]
    # Only the gateway (and Grafana) are published, and only on the host's loopback.
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    port = values["gateway"]["port"]
    assert published == {"gateway": [f"127.0.0.1:{port}:{port}"], "grafana": ["127.0.0.1:3000:3000"]}


def test_every_artifact_user_mounts_one_volume_at_one_path() -> None:
    path = yaml.safe_load((CHART / "values.yaml").read_text())["artifacts"]["mountPath"]
    for name, service in load()["services"].items():
        if name in ("redis", "sandbox", *MONITORING):
            assert not any(v.startswith("artifacts:") for v in service.get("volumes", [])), name
            continue
        assert f"artifacts:{path}" in service["volumes"], name


def test_sandbox_is_isolated_from_the_outside() -> None:
    compose = load()
    sandbox = compose["services"]["sandbox"]
    assert sandbox["networks"] == ["sandbox"] and compose["networks"]["sandbox"]["internal"] is True
    assert "ports" not in sandbox
    assert sandbox["cap_drop"] == ["ALL"] and "SYS_ADMIN" not in sandbox["cap_add"]
    callers = {
        n for n, s in compose["services"].items() if "sandbox" in s.get("networks", []) and n != "sandbox"
    }
    assert callers == {"inference", "ray", "prometheus"}  # tool calls, HumanEval, /metrics


@pytest.mark.parametrize("name", ["gateway", "tokenizer", "sandbox"])
def test_service_settings_load_from_the_compose_environment(
    name: str, clean_env: Callable[[dict[str, str]], None]
) -> None:
    from gateway.settings import load_settings as gateway_settings
    from sandbox.settings import load_settings as sandbox_settings
    from tokenizer_svc.settings import load_settings as tokenizer_settings

    loaders = {"gateway": gateway_settings, "tokenizer": tokenizer_settings, "sandbox": sandbox_settings}
    env = environment(load()["services"][name])
    prefix = f"CHATFORGE_{name.upper()}_"
    settings = loaders[name]
    clean_env(env)
    loaded = settings()
    unknown = [
        k for k in env if k.startswith(prefix) and k[len(prefix) :].lower() not in type(loaded).model_fields
    ]
    assert not unknown, f"no such setting: {unknown}"
    assert loaded.host == "0.0.0.0"
    if name == "gateway":
        assert loaded.key_pepper == PEPPER and loaded.auth_required and loaded.job_backend == "ray"
        assert loaded.ray_address == "http://ray:8265"


def test_inference_container_runs_a_real_command() -> None:
    service = load()["services"]["inference"]
    # compose's `command` replaces the image's CMD and follows its ENTRYPOINT.
    argv = entrypoint(ROOT / service["build"]["dockerfile"]) + service["command"]
    assert check_command(argv) is None
    assert argv[argv.index("--sandbox-url") + 1] == "http://sandbox:8092"
    assert argv[argv.index("--port") + 1] == "8000"


def test_prometheus_scrapes_every_service_where_it_serves_metrics() -> None:
    compose = load()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    config = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    targets = {
        t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]
    }
    assert targets == {
        f"gateway:{values['gateway']['port']}",
        f"tokenizer:{values['tokenizer']['metricsPort']}",
        f"sandbox:{values['sandbox']['port']}",
        f"inference:{values['inference']['servePort']}",
        f"ray:{values['ray']['metricsPort']}",
    }
    ray = compose["services"]["ray"]["entrypoint"]
    assert f"--metrics-export-port={values['ray']['metricsPort']}" in ray
    # The dashboards filter by namespace; outside Kubernetes the scrape config sets it.
    labels = [group["labels"] for job in config["scrape_configs"] for group in job["static_configs"]]
    assert all(label.get("namespace") for label in labels)
    networks = compose["services"]["prometheus"]["networks"]
    assert "sandbox" in networks, "the sandbox's /metrics is only on its internal network"


def test_grafana_loads_the_charts_dashboards() -> None:
    compose = load()
    grafana = compose["services"]["grafana"]
    (mount,) = [v for v in grafana["volumes"] if v.startswith("./")]
    source, target, _ = mount.split(":")
    assert (ROOT / source).resolve() == CHART / "dashboards"
    provider = yaml.safe_load(compose["configs"]["grafana-dashboards"]["content"])["providers"][0]
    assert provider["options"]["path"] == target
    datasource = yaml.safe_load(compose["configs"]["grafana-datasource"]["content"])["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
