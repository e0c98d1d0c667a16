"""Deployments through a real Ray Serve with two engine replicas: `POST /v1/deployments` rewrites the
Serve deployment's user_config through Serve's REST API (the Ray dashboard), every replica switches
(asked one by one with a broadcast), and a checkpoint whose generation fails its health check is
rolled back on every replica.

The gateway is built by `gateway.runtime.build_inference` from its settings (remote mode,
`serve_admin_url`, `serve_app`), as in docker compose.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from gateway.jobs.ray_jobs import ray_auth_headers
from gateway.runtime import build_inference
from inference_svc.serve import serve_config
from inference_svc.settings import load_settings as inference_settings

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.raylocal import free_port, loopback_env, start_head
from tests.gateway.conftest import make_model

APP, DEPLOYMENT = "chatforge", "inference"  # the chart's names (templates/rayservice.yaml)
REPLICAS = 2
pytestmark = pytest.mark.slow  # a Ray head with its dashboard and two engine replicas: about 40 s


def make_store(root: Path, tokenizer: Any) -> Path:
    """tiny/sft and tiny/mid (random weights), and broken/sft: a checkpoint that loads but whose
    weights went to NaN (a diverged run), so every generation on it fails."""
    store = ArtifactStore.from_env(root)
    tokenizer.save(store.tokenizer_path("default"))
    for run, stage, seed in (("tiny", "sft", 0), ("tiny", "mid", 1), ("broken", "sft", 2)):
        model = make_model(tokenizer.vocab_size, seed)
        if run == "broken":
            with torch.no_grad():
                model.lm_head.weight.fill_(math.nan)
        checkpoint.save(
            store.stage_dir(run, stage), 1, model.state_dict(), config=model.config.to_dict(),
            metrics={}, extra={"tokenizer": "default", "stage": stage, "run": run},
        )  # fmt: skip
    return root


def wait_running(dashboard: str, timeout_s: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    app: dict[str, Any] = {}
    while time.monotonic() < deadline:
        app = (
            httpx.get(f"{dashboard}/api/serve/applications/", timeout=10, headers=ray_auth_headers())
            .json()["applications"]
            .get(APP)
            or {}
        )
        if app.get("status") == "RUNNING":
            return app
        assert app.get("status") not in ("DEPLOY_FAILED", "UNHEALTHY"), app
        time.sleep(0.5)
    raise AssertionError(f"the Serve application did not start: {app}")


@pytest.fixture(scope="module")
def serve_cluster(tmp_path_factory, tiny_tokenizer) -> Iterator[dict[str, Any]]:
    """A Ray head (its dashboard on loopback) running the engine's Serve app from a config, with two
    replicas of tiny/sft, as `chatforge inference serve` deploys it."""
    root = make_store(tmp_path_factory.mktemp("deploy-artifacts"), tiny_tokenizer)
    head = start_head(tempfile.mkdtemp(prefix="cf-dep-", dir="/tmp"), num_cpus=2)
    try:
        settings = inference_settings(
            checkpoint="tiny/sft", artifacts_root=str(root), device="cpu", num_blocks=64,
            max_num_seqs=4, num_cpus=0, min_replicas=REPLICAS, max_replicas=REPLICAS, app_name=DEPLOYMENT,
        )  # fmt: skip
        config = serve_config(settings)
        config["applications"][0]["name"] = APP
        port = free_port()
        config["http_options"] = {"host": "127.0.0.1", "port": port}
        r = httpx.put(
            f"{head.dashboard_url}/api/serve/applications/",
            json=config,
            timeout=60,
            headers=ray_auth_headers(),
        )
        assert r.status_code == 200, r.text
        wait_running(head.dashboard_url)
        yield {
            "root": root, "dashboard": head.dashboard_url, "url": f"http://127.0.0.1:{port}",
            "gcs": head.gcs_address,
        }  # fmt: skip
    finally:
        head.stop()


# Asks each replica, not the load balancer: a Serve handle's broadcast, from a driver of its own (a
# handle left in this process would outlive the cluster and start a Ray of its own here).
BROADCAST = """
import json, sys
import ray
from ray import serve
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
handle = serve.get_deployment_handle(sys.argv[3], app_name=sys.argv[2])
print(json.dumps(sorted(info.checkpoint for info in handle.broadcast("info").results(timeout_s=60))))
"""


def every_replica(cluster: dict[str, Any]) -> list[str]:
    """The checkpoint each replica serves, as each one answers."""
    env = {**os.environ, **loopback_env(), "RAY_AUTH_MODE": "token"}  # the head's token auth
    out = subprocess.run(
        [sys.executable, "-c", BROADCAST, cluster["gcs"], APP, DEPLOYMENT],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def served_gateway(launch, serve_cluster):
    return launch(
        auth="off", artifacts_root=str(serve_cluster["root"]), mode="remote",
        inference_url=serve_cluster["url"], serve_admin_url=serve_cluster["dashboard"], serve_app=APP,
        deploy_timeout_s=300.0, inference=build_inference,
    )  # fmt: skip


def chat(gateway: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "chatforge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=60,
    )


def test_deploy_switches_every_replica(served_gateway, serve_cluster):
    assert every_replica(serve_cluster) == ["tiny/sft/step_000001"] * REPLICAS

    r = httpx.post(served_gateway.url + "/v1/deployments", json={"checkpoint": "tiny/mid"}, timeout=400)
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "serving" and r.json()["checkpoint"] == "tiny/mid/step_000001"
    assert every_replica(serve_cluster) == ["tiny/mid/step_000001"] * REPLICAS
    # Serve keeps the checkpoint in the deployment's config: a replica started later loads it too.
    app = wait_running(serve_cluster["dashboard"])
    [deployment] = app["deployed_app_config"]["deployments"]
    assert deployment["user_config"] == {"checkpoint": "tiny/mid/step_000001"}
    assert len(app["deployments"][DEPLOYMENT]["replicas"]) == REPLICAS
    listed = httpx.get(served_gateway.url + "/v1/models").json()["data"]
    assert listed[0]["checkpoint"] == "tiny/mid/step_000001"
    answer = chat(served_gateway)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] >= 1


def test_a_failed_health_check_rolls_every_replica_back(served_gateway, serve_cluster):
    before = httpx.post(served_gateway.url + "/v1/deployments", json={"checkpoint": "tiny/mid"}, timeout=400)
    assert before.status_code == 201, before.text

    # Not waiting: the record shows each step while the switch runs.
    r = httpx.post(
        served_gateway.url + "/v1/deployments", json={"checkpoint": "broken/sft", "wait": False}, timeout=30
    )
    assert r.status_code == 202 and r.json()["state"] == "loading"
    seen: list[str] = []
    deadline = time.monotonic() + 400
    while True:
        record = httpx.get(served_gateway.url + "/v1/deployments/current", timeout=30).json()
        if record["message"] and record["message"] not in seen:
            seen.append(record["message"])
        if record["state"] != "loading" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert record["state"] == "failed", record
    assert "health check failed" in record["message"] and "NaN" in record["message"], record
    assert "rolled back: every replica serves tiny/mid" in record["message"], record
    # While it ran, the record showed its steps (each lasts from milliseconds to seconds; the
    # replicas' reload and the health check last long enough to be seen between two reads).
    steps = ("writing checkpoint", "replicas loading", "every replica reports", "health check failed")
    assert any(m.startswith(steps) for m in seen[:-1]), seen
    assert every_replica(serve_cluster) == ["tiny/mid/step_000001"] * REPLICAS
    app = wait_running(serve_cluster["dashboard"])
    assert app["deployed_app_config"]["deployments"][0]["user_config"] == {
        "checkpoint": "tiny/mid/step_000001"
    }
    answer = chat(served_gateway)
    assert answer.status_code == 200, answer.text

    # The same failure when waiting: a 503 that says what is served now.
    waited = httpx.post(
        served_gateway.url + "/v1/deployments", json={"checkpoint": "broken/sft"}, timeout=400
    )
    assert waited.status_code == 503 and "rolled back" in waited.json()["error"]["message"], waited.text


def test_deploy_without_a_serve_config_is_503_naming_the_settings(launch, serve_cluster):
    from gateway.remote_inference import RemoteInference

    async def no_switch(settings):
        client = RemoteInference(serve_cluster["url"], model_id=settings.model_id)
        await client.refresh()
        return client

    gw = launch(auth="off", artifacts_root=str(serve_cluster["root"]), inference=no_switch)
    r = httpx.post(gw.url + "/v1/deployments", json={"checkpoint": "tiny/mid"}, timeout=30)
    assert r.status_code == 503 and "CHATFORGE_GATEWAY_SERVE_ADMIN_URL" in r.json()["error"]["message"]
