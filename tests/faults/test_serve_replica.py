"""A Ray Serve replica of the inference app is killed (SIGKILL of its worker process) while a chat
streams through a gateway in remote-inference mode.

What may be lost: the stream in flight. Its client gets an error event and the end of the stream
at once (no hang until a timeout, no half-open connection); Serve replaces the replica, and the next
request, through the same gateway, is served.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time

import httpx
import psutil
import pytest

from chatforge.raylocal import local_ray

from .conftest import CHECKPOINT, chat_body, embedded_redis, free_port, in_process_gateway

pytestmark = pytest.mark.slow  # starts Ray and Serve: ~20-30 s on two cores


def replica_processes() -> list[psutil.Process]:
    out = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "ServeReplica" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_a_killed_replica_is_an_error_event_and_the_next_request_is_served(tmp_path, fault_artifacts):
    from inference_svc.serve import build_app
    from inference_svc.settings import load_settings
    from ray import serve

    temp = tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp")
    server = embedded_redis(tmp_path / "redis")
    with local_ray(temp, num_cpus=2):
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        gateway = None
        try:
            config = load_settings(
                checkpoint=CHECKPOINT,
                artifacts_root=str(fault_artifacts),
                device="cpu",
                num_blocks=512,
                num_cpus=0.5,
            )
            serve.run(build_app(config), name="inference", route_prefix="/")
            gateway = in_process_gateway(
                fault_artifacts, server.url, inference_url=f"http://127.0.0.1:{port}"
            )  # type: ignore[attr-defined]
            # Under load Serve may replace a replica that was slow to start; the one to kill is the
            # one left once the old one has exited.
            deadline = time.monotonic() + 120
            while len(replicas := replica_processes()) != 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert len(replicas) == 1, [" ".join(p.cmdline())[:80] for p in replicas]
            (replica,) = replicas

            events: list[dict] = []
            done = False
            with httpx.stream(
                "POST", gateway.url + "/v1/chat/completions", json=chat_body(1500), timeout=120
            ) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    events.append(json.loads(line[len("data: ") :]))
                    if len(events) == 5:
                        replica.send_signal(signal.SIGKILL)
                        killed_at = time.monotonic()
            assert len(events) > 5, "the stream finished before the kill: make it longer"
            assert done and time.monotonic() - killed_at < 15  # ended, promptly, not at a timeout
            finish = [c for e in events for c in e.get("choices", []) if c.get("finish_reason")]
            assert finish and finish[-1]["finish_reason"] == "error", events[-3:]
            assert any("error" in e for e in events[-3:]), events[-3:]  # the error event says why

            deadline = time.monotonic() + 90  # Serve starts a new replica (a new worker, the model loaded)
            while True:
                again = httpx.post(
                    gateway.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60
                )
                if again.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert again.status_code == 200, again.text
            assert [p.pid for p in replica_processes()] != [replica.pid]
        finally:
            if gateway is not None:
                gateway.stop()
            serve.shutdown()
    server.stop()  # type: ignore[attr-defined]
