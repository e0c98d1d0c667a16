"""docker-compose.yml: valid, built from the project's Dockerfiles, and consistent with the chart."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from .chart import CHART, ROOT
from .dockerfile import DEPLOYABLES, check_command, entrypoint, parse

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
# Images built from docker/ (no deployable's): Redis and Prometheus from Debian's packages.
SUPPORT = ("docker/redis.Dockerfile", "docker/prometheus.Dockerfile")
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
        assert name == "grafana", f"{name}: only Grafana (not packaged by Debian) comes from a public image"
        return
    build = service["build"]
    assert build["context"] == ".", "images are built from the repository root"
    dockerfile = ROOT / build["dockerfile"]
    assert dockerfile.is_file(), f"{name}: {build['dockerfile']} does not exist"
    assert dockerfile.parent.relative_to(ROOT).as_posix() in DEPLOYABLES or build["dockerfile"] in SUPPORT, (
        f"{name}: not a deployable's image"
    )
    assert service["image"].startswith("chatforge/")
    # The base is the Dockerfile's own default unless CHATFORGE_BASE names another (docker/build.sh).
    default = next(
        i.arguments for i in parse(dockerfile) if i.keyword == "ARG" and i.arguments.startswith("BASE=")
    )
    assert build["args"] == {"BASE": default.split("=", 1)[1]}
    assert load({"CHATFORGE_KEY_PEPPER": PEPPER, "CHATFORGE_BASE": "chatforge/base:bookworm"})["services"][
        name
    ]["build"]["args"] == {"BASE": "chatforge/base:bookworm"}


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_has_a_healthcheck(name: str) -> None:
    check = load()["services"][name].get("healthcheck")
    assert check and check["test"][0] == "CMD" and len(check["test"]) > 1, f"{name}: no healthcheck"
    assert check.get("retries", 3) >= 3


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
    assert sorted(sandbox["networks"]) == ["sandbox", "sandbox-metrics"]
    assert all(compose["networks"][n]["internal"] is True for n in sandbox["networks"])
    assert "ports" not in sandbox
    assert sandbox["cap_drop"] == ["ALL"] and "SYS_ADMIN" not in sandbox["cap_add"]

    def members(network: str) -> set[str]:
        return {
            n for n, s in compose["services"].items() if network in s.get("networks", []) and n != "sandbox"
        }

    # Only what accepts no code shares a network with it: its caller (tool calls) and Prometheus.
    # Ray (job submission) and the gateway do not.
    assert members("sandbox") == {"inference"}
    assert members("sandbox-metrics") == {"prometheus"}


def test_inference_listens_only_on_its_default_network_address() -> None:
    # It shares the sandbox's network, and its Ray dashboard accepts code (Serve's REST API): every
    # listener is bound to its fixed address on `default`, none to the sandbox's network.
    compose = load()
    inference = compose["services"]["inference"]
    address = inference["networks"]["default"]["ipv4_address"]
    assert environment(inference)["CHATFORGE_INFERENCE_HOST"] == address
    (subnet,) = [c["subnet"] for c in compose["networks"]["default"]["ipam"]["config"]]
    assert ipaddress.ip_address(address) in ipaddress.ip_network(subnet)
    assert "0.0.0.0" not in " ".join(inference["command"])
    assert address in " ".join(inference["healthcheck"]["test"]) or "CHATFORGE_INFERENCE_HOST" in " ".join(
        inference["healthcheck"]["test"]
    )


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
    assert "sandbox-metrics" in networks, "the sandbox's /metrics is only on its internal networks"


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


def test_the_end_to_end_override_validates_and_publishes_only_on_loopback() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here (make docker-deps)")
    ports = {
        "CHATFORGE_PORT": "18000",
        "CHATFORGE_E2E_INFERENCE_PORT": "18001",
        "CHATFORGE_E2E_TOKENIZER_METRICS_PORT": "18002",
        "CHATFORGE_E2E_SANDBOX_METRICS_PORT": "18003",
        "CHATFORGE_E2E_PROMETHEUS_PORT": "18004",
    }
    env = {**os.environ, "CHATFORGE_KEY_PEPPER": PEPPER, "CHATFORGE_E2E_ARTIFACTS": "/var/tmp", **ports}
    out = subprocess.run(
        [
            docker,
            "compose",
            "-f",
            str(COMPOSE),
            "-f",
            str(ROOT / "docker" / "compose.e2e.yml"),
            "--profile",
            "monitoring",
            "config",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    published = {
        (name, p["host_ip"], int(p["published"]))
        for name, s in services.items()
        for p in s.get("ports", [])
        if name != "grafana"  # not started by docker/e2e.sh (a public image)
    }
    assert {(host, port) for _, host, port in published} == {("127.0.0.1", int(p)) for p in ports.values()}
    # The relay of the sandbox's /metrics joins no network that reaches the sandbox's API callers'.
    relay = services["sandbox-metrics"]
    assert sorted(relay["networks"]) == ["default", "sandbox-metrics"] and relay["user"] == "65534:65534"
    assert "sandbox" not in services["prometheus"]["networks"]
