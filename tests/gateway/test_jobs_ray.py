"""Jobs on a real local Ray through the Ray Jobs API: events live over SSE, a gateway restart in the
middle of a job, cancel, logs. One Ray (with its dashboard, which serves the Jobs API) per module."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import httpx
import pytest
from gateway.jobs.ray_jobs import RayJobsBackend

from chatforge.contracts.events import JobStateEvent, RawEvent, StartEvent, parse_event
from chatforge.raylocal import init_local_ray, shutdown_ray

STAGE = f"{sys.executable} {Path(__file__).with_name('emit_stage.py')} --step-s 0.2"
pytestmark = pytest.mark.slow  # starting Ray with its dashboard takes 15-30 s on 2 shared cores


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def ray_dashboard(short_tmp_module):
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT as agent_port

    if _port_busy(agent_port):
        # ray.init cannot move the dashboard agent off its fixed port; another Ray on this machine
        # (a demo run beside the tests) holds it, and then no job can be submitted to ours.
        pytest.skip(f"another Ray's dashboard agent holds 127.0.0.1:{agent_port}; the Ray Jobs tests need it")

    with socket.socket() as s:  # a free port: other tests may run a Ray dashboard on the default one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = init_local_ray(
        short_tmp_module, num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port
    )
    url = context.dashboard_url
    yield url if url.startswith("http") else f"http://{url}"
    shutdown_ray()


@pytest.fixture(scope="module")
def short_tmp_module():
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="cfgw-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _launch(launch, url):
    return launch(
        backend=RayJobsBackend(url, name="local"), auth="off", job_backend="local", job_command=STAGE
    )


def _wait_state(gw, job_id, states, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = httpx.get(gw.url + f"/v1/jobs/{job_id}", timeout=30).json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stayed {job['state']}, never {states}")


def _events(gw, job_id, after="0"):
    """Every SSE event of a job's stream until the server ends it."""
    out = []
    with httpx.stream("GET", gw.url + f"/v1/jobs/{job_id}/events", params={"after": after}, timeout=90) as r:
        assert r.status_code == 200
        for block in r.read().decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in lines:
                out.append((lines.get("id"), lines.get("event"), json.loads(lines["data"])))
    return out


def test_job_survives_a_gateway_restart(launch, ray_dashboard):
    first = _launch(launch, ray_dashboard)
    body = {"stage": "base", "run": "restart", "config": {"num_steps": 30}}
    r = httpx.post(first.url + "/v1/jobs", json=body, timeout=60)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["backend"] == "local" and job["state"] == "queued"
    running = _wait_state(first, job["id"], {"running"})
    first.stop()  # the gateway goes away mid-job; records are in Redis, the job in Ray

    second = _launch(launch, ray_dashboard)
    again = httpx.get(second.url + f"/v1/jobs/{job['id']}", timeout=30).json()
    assert again["id"] == job["id"] and again["entrypoint"] == job["entrypoint"]
    assert again["created"] == job["created"] and again["started"] == running["started"]
    assert again["state"] in ("running", "succeeded")
    done = _wait_state(second, job["id"], {"succeeded"})
    assert done["finished"] >= done["started"]

    events = _events(second, job["id"])
    assert events[-1][1] == "end"
    events = events[:-1]
    kinds = [data["type"] for _, _, data in events]
    assert kinds[0] == "state" and [k for k in kinds if k != "state"][0] == "start" and "done" in kinds
    steps = [data["step"] for _, _, data in events if data["type"] == "progress"]
    assert steps == list(range(1, 31))
    state = JobStateEvent(state="succeeded", message=done["message"])
    assert state.model_dump() in [d for _, _, d in events]
    # every event on the stream is one of the contract's, parsed as such (no drift)
    assert not [d for _, _, d in events if isinstance(parse_event(d), RawEvent)]
    start = next(parse_event(d) for _, _, d in events if d["type"] == "start")
    assert isinstance(start, StartEvent) and start.num_steps == 30
    # resuming after a given event id returns only later ones
    mid_id = next(i for i, _, d in events if d.get("step") == 5 and d["type"] == "progress")
    later = _events(second, job["id"], after=mid_id)
    assert [d.get("step") for _, _, d in later if d.get("type") == "progress"] == list(range(6, 31))
    logs = httpx.get(second.url + f"/v1/jobs/{job['id']}/logs", timeout=30).text
    assert "step 30/30" in logs


def test_cancel_a_running_job(launch, ray_dashboard):
    gw = _launch(launch, ray_dashboard)
    job = httpx.post(
        gw.url + "/v1/jobs", json={"stage": "sft", "config": {"num_steps": 300}}, timeout=60
    ).json()
    _wait_state(gw, job["id"], {"running"})
    cancelled = httpx.post(gw.url + f"/v1/jobs/{job['id']}/cancel", timeout=30).json()
    assert cancelled["state"] == "cancelled"
    ray_state = gw.state.jobs.backend.status(gw.state.jobs.store.get(job["id"]))
    deadline = time.monotonic() + 30
    while ray_state.state != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.3)
        ray_state = gw.state.jobs.backend.status(gw.state.jobs.store.get(job["id"]))
    assert ray_state.state == "cancelled"  # Ray itself stopped it
    events = _events(gw, job["id"])
    assert events[-1][1] == "end"
    assert not any(d.get("step") == 300 for _, _, d in events)
