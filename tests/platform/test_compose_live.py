"""The compose stack, running: checks on real containers that the static tests can only read.

These run against the stack docker/e2e.sh brings up (it sets CHATFORGE_E2E_COMPOSE to the compose
command, and CHATFORGE_E2E_PROMETHEUS), right after the end-to-end suite, so the images are
built and the stack started once for both; `.ci/run` does it. Elsewhere they skip, saying so.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time

import httpx
import pytest

COMPOSE = shlex.split(os.environ.get("CHATFORGE_E2E_COMPOSE", ""))
pytestmark = pytest.mark.skipif(
    not COMPOSE,
    reason="no compose stack to check: docker/e2e.sh brings one up and runs these (needs a Docker engine: "
    "make docker-deps; docker/dockerd.sh start; docker/build.sh)",
)

# Every service docker/e2e.sh starts, and the user each runs as (uid:gid as `id` prints them).
USERS = {
    "redis": "999",
    "tokenizer": "10001",
    "sandbox": "0",  # by design: per-slot uids need setuid (services/sandbox/Dockerfile)
    "inference": "1000",
    "ray": "1000",
    "gateway": "10001",
    "prometheus": "998",
}


def compose(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMPOSE, *args], capture_output=True, text=True, timeout=timeout)


def connect(service: str, host: str, port: int) -> str:
    """From inside `service`'s container: "open", or why a TCP connection to host:port failed."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        f"    socket.create_connection(({host!r}, {port}), timeout=3).close(); print('open')\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    done = compose("exec", "-T", service, "python", "-c", probe)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_every_service_is_up_and_healthy() -> None:
    done = compose("ps", "--format", "json")
    assert done.returncode == 0, done.stderr
    text = done.stdout.strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
    health = {row["Service"]: (row["State"], row.get("Health", "")) for row in rows}
    for service in USERS:
        assert health.get(service) == ("running", "healthy"), f"{service}: {health.get(service)}"


@pytest.mark.parametrize("service", sorted(USERS))
def test_service_runs_as_its_numeric_user(service: str) -> None:
    done = compose("exec", "-T", service, "id", "-u")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == USERS[service]


def test_the_sandbox_reaches_nothing_that_accepts_code() -> None:
    # The control: its one caller does reach it (else every refusal below would prove nothing).
    assert connect("inference", "sandbox", 8092) == "open"
    # Ray's dashboards (job submission, Serve's REST API), the gateway, Redis: unreachable, either
    # not on the sandbox's networks (no such name) or listening only on another network.
    for host, port in [
        ("inference", 8265),
        ("inference", 8000),
        ("ray", 8265),
        ("gateway", 8000),
        ("redis", 6379),
    ]:
        outcome = connect("sandbox", host, port)
        assert outcome != "open", f"the sandbox reaches {host}:{port}"
    # ...and no route out of the compose networks.
    assert connect("sandbox", "1.1.1.1", 53) != "open"


def test_prometheus_scrapes_every_service() -> None:
    url = os.environ.get("CHATFORGE_E2E_PROMETHEUS", "")
    assert url, "docker/e2e.sh sets CHATFORGE_E2E_PROMETHEUS to the published Prometheus"
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{url}/api/v1/targets", timeout=10, trust_env=False).json()
        targets = answer["data"]["activeTargets"]
        health = {t["labels"]["instance"]: t["health"] for t in targets}
        if set(health.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == dict.fromkeys(
        ["gateway:8000", "tokenizer:9464", "sandbox:8092", "inference:8000", "ray:8080"], "up"
    ), health
