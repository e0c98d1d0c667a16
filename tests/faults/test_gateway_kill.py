"""`chatforge gateway serve` (local mode: engine in process, embedded Redis, local Ray for jobs) is
killed with SIGKILL mid-stream, mid-deploy and mid-job, or stopped with SIGTERM, then started again.

What may be lost: only the work in flight at the kill, and each test says what that is and checks
that the rest is kept: Redis's data (the embedded server saves when its owner dies), job records
and events, and the gateway's service after its restart. No process may outlive the gateway: the
`gateways` fixture remembers every process ever seen under a gateway and fails the test if one is
still running 30 s after its gateway ended.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from chatforge.contracts.jobs import job_process_key
from chatforge.lifetime import ProcessRef, session_members

from .conftest import BIG_CHECKPOINT, chat_body, describe, survivors


def redis_server_of(gateway) -> list[psutil.Process]:  # type: ignore[no-untyped-def]
    return [p for p in gateway.descendants() if "redis-server" in p.name()]


def test_a_clean_stop_stops_the_embedded_redis(gateways):
    gateway = gateways()
    servers = redis_server_of(gateway)
    assert len(servers) == 1, describe(gateway.descendants())
    socket = Path(servers[0].cmdline()[-1].split(":", 1)[1]) if ":" in servers[0].cmdline()[-1] else None
    gateway.terminate()
    # uvicorn shuts down, then dies of the signal it caught (as a supervisor expects)
    assert gateway.proc.returncode in (0, -signal.SIGTERM), gateway.log_text()[-2000:]
    assert "Application shutdown complete" in gateway.log_text()
    assert survivors(servers, timeout_s=10) == []  # it stops with its owner, not orphaned to init
    if socket is not None:
        assert not socket.exists()


def test_sigkill_mid_stream_breaks_the_stream_and_the_restart_serves(gateways, tmp_path):
    """Lost: the rest of the stream in flight (the client sees it break and may retry). Kept: what
    Redis held (a conversation stored before the kill), and service after the restart."""
    gateway = gateways()
    stored = httpx.post(gateway.url + "/v1/conversations", json={"title": "kept", "messages": []}, timeout=30)
    assert stored.status_code in (200, 201), stored.text
    received, error = 0, None
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=chat_body(1500), timeout=30) as r:
        assert r.status_code == 200
        try:
            for line in r.iter_lines():
                assert line != "data: [DONE]", "the stream finished before the kill: make it longer"
                received += line.startswith("data: ")
                if received == 5:
                    gateway.kill()
                    killed_at = time.monotonic()
        except httpx.HTTPError as e:
            error = e
    assert error is not None, "the stream ended cleanly although its gateway was killed"
    assert time.monotonic() - killed_at < 5  # a broken stream at once, not a hang until the timeout
    assert survivors(gateway.seen, timeout_s=15) == [], describe(gateway.seen)

    again = gateways()
    answer = httpx.post(again.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60)
    assert answer.status_code == 200, answer.text
    listed = httpx.get(again.url + "/v1/conversations", timeout=30).json()
    assert stored.json()["id"] in json.dumps(listed)


def test_sigkill_mid_deploy_leaves_a_failed_deployment_not_a_stuck_one(gateways):
    """Lost: the load in flight. Kept: the request's record, which the restarted gateway reports as
    failed with why (nobody would ever finish it), and the model it serves."""
    gateway = gateways()
    r = httpx.post(
        gateway.url + "/v1/deployments", json={"checkpoint": BIG_CHECKPOINT, "wait": False}, timeout=30
    )
    assert r.status_code == 202, r.text
    current = httpx.get(gateway.url + "/v1/deployments/current", timeout=30).json()
    assert current["state"] == "loading", "the load finished before the kill: make the checkpoint bigger"
    gateway.kill()
    assert survivors(gateway.seen, timeout_s=15) == [], describe(gateway.seen)

    again = gateways()
    record = httpx.get(again.url + "/v1/deployments/current", timeout=30).json()
    assert record["id"] == current["id"] and record["checkpoint"] == current["checkpoint"]
    assert record["state"] == "failed" and "stopped before it finished" in record["message"]
    assert httpx.get(again.url + "/v1/deployments/current", timeout=30).json() == record  # stored so
    answer = httpx.post(again.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60)
    assert answer.status_code == 200, answer.text  # the configured checkpoint serves


@pytest.mark.slow  # starts a Ray head for the job: 20-40 s on two shared cores
def test_sigkill_mid_job_ends_the_job_and_every_process_of_it(gateways, tmp_path):
    """Lost: the job (a local job runs on the gateway's own Ray, which ends with it). Kept: its
    record and events, which the restarted gateway closes consistently: failed, saying why, the
    events it wrote before the kill and nothing after. No process of the job, of its Ray or of
    the embedded Redis is left."""
    gateway = gateways()
    job = httpx.post(
        gateway.url + "/v1/jobs",
        json={"stage": "base", "run": "faulty", "config": {"num_steps": 500}},
        timeout=180,
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    store = redis.Redis(unix_socket_path=str(tmp_path / "redis" / "redis.sock"), decode_responses=True)
    deadline = time.monotonic() + 120
    while store.xlen(f"chatforge:job:{job_id}:events") < 4:  # start and a few steps: the job runs
        assert time.monotonic() < deadline, gateway.log_text()[-3000:]
        time.sleep(0.2)
    session = ProcessRef.from_dict(json.loads(store.get(job_process_key(job_id))))
    job_processes = [psutil.Process(pid) for pid in session_members(session.pid)]
    assert job_processes and session.running()
    gateway.descendants()  # remember Ray's processes too
    store.close()

    gateway.kill()
    gone = survivors(gateway.seen + job_processes, timeout_s=20)
    assert gone == [], f"left running after SIGKILL of the gateway: {describe(gone)}"
    assert not session.running() and session_members(session.pid) == []

    again = gateways()
    record = httpx.get(again.url + f"/v1/jobs/{job_id}", timeout=30).json()
    assert record["state"] == "failed", record
    assert "earlier gateway" in record["message"] and "is gone" in record["message"]
    assert record["gateway"] != job.json()["gateway"] and record["finished"] >= record["started"]
    events = _events(again.url, job_id)
    assert events[-1][0] == "end"
    data = [d for kind, d in events if kind != "end"]
    steps = [d["step"] for d in data if d["type"] == "progress"]
    assert steps and steps == list(range(1, len(steps) + 1)) and steps[-1] < 500
    assert not [d for d in data if d["type"] == "done"]
    assert {"type": "state", "state": "failed", "message": record["message"]}.items() <= data[0].items()
    store = redis.Redis(unix_socket_path=str(tmp_path / "redis" / "redis.sock"), decode_responses=True)
    assert store.get(job_process_key(job_id)) is None  # the ended job's session record is gone
    store.close()


def _events(url: str, job_id: str) -> list[tuple[str, dict]]:
    out = []
    with httpx.stream("GET", url + f"/v1/jobs/{job_id}/events", timeout=60) as r:
        assert r.status_code == 200
        for block in r.read().decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in lines:
                out.append((lines.get("event", "message"), json.loads(lines["data"])))
    return out


def test_sigkill_of_the_gateway_takes_the_embedded_redis_along(gateways):
    gateway = gateways()
    servers = redis_server_of(gateway)
    assert len(servers) == 1
    gateway.proc.send_signal(signal.SIGKILL)
    gateway.proc.wait(10)
    assert survivors(servers, timeout_s=15) == []  # parent-death signal: it saves and exits
    again = gateways()  # and the next start on the same directory is clean
    assert len(redis_server_of(again)) == 1
