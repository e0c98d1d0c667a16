"""/healthz, /readyz (Redis, tokenizer, inference) and /metrics with route templates as labels."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from gateway.codec import CodecUnavailable, GrpcCodec
from prometheus_client.parser import text_string_to_metric_families


def _samples(gateway) -> list:
    text = httpx.get(gateway.url + "/metrics").text
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_health_and_ready(gateway):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": "ok", "tokenizer": "ok", "inference": "ok"}


def test_not_ready_without_a_model_and_chat_is_503(launch):
    empty = launch(auth="off", deploy=False)
    ready = httpx.get(empty.url + "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["inference"].startswith("failing")
    assert httpx.get(empty.url + "/v1/models").json()["data"] == []
    r = httpx.post(
        empty.url + "/v1/chat/completions",
        json={"model": "chatforge", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    # deploying through the API makes it ready
    deployed = httpx.post(empty.url + "/v1/deployments", json={"checkpoint": "tiny/mid"}, timeout=60)
    assert deployed.status_code == 201 and deployed.json()["checkpoint"] == "tiny/mid/step_000001"
    assert httpx.get(empty.url + "/readyz").status_code == 200
    assert httpx.get(empty.url + "/v1/models").json()["data"][0]["checkpoint"] == "tiny/mid/step_000001"
    assert httpx.get(empty.url + "/v1/deployments/current").json()["checkpoint"] == "tiny/mid/step_000001"


def test_unreachable_tokenizer_is_reported():
    async def check():
        codec = GrpcCodec("127.0.0.1:1", timeout_s=1)
        try:
            await codec.check()
        finally:
            await codec.close()

    with pytest.raises(CodecUnavailable, match="UNAVAILABLE"):
        asyncio.run(check())


def test_metrics_use_route_templates(gateway):
    job_id = httpx.post(gateway.url + "/v1/jobs", json={"stage": "base"}).json()["id"]
    httpx.get(gateway.url + f"/v1/jobs/{job_id}")
    httpx.get(gateway.url + "/v1/jobs/job-doesnotexist")
    httpx.get(gateway.url + "/no/such/path")
    httpx.post(
        gateway.url + "/v1/chat/completions",
        json={"model": "chatforge", "messages": [{"role": "user", "content": "m"}], "max_tokens": 2},
    )
    samples = _samples(gateway)
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in samples
        if s.name == "chatforge_http_requests_total"
    }
    assert requests[("/v1/jobs/{job_id}", "GET", "200")] >= 1
    assert requests[("/v1/jobs/{job_id}", "GET", "404")] >= 1
    assert requests[("unmatched", "GET", "404")] >= 1
    assert requests[("/v1/chat/completions", "POST", "200")] >= 1
    assert not any(job_id in route or "doesnotexist" in route for route, _, _ in requests)
    names = {s.name for s in samples}
    assert "chatforge_http_request_duration_seconds_bucket" in names
    assert "chatforge_gateway_streams_open" in names
    assert any(s.name == "chatforge_gateway_generated_tokens_total" and s.value >= 1 for s in samples)
    deadline = time.monotonic() + 10  # the job gauges are refreshed by the reconcile loop
    while time.monotonic() < deadline:
        jobs = {s.labels["state"]: s.value for s in _samples(gateway) if s.name == "chatforge_gateway_jobs"}
        if jobs.get("queued", 0) >= 1:
            break
        time.sleep(0.5)
    assert set(jobs) == {"queued", "running", "succeeded", "failed", "cancelled"} and jobs["queued"] >= 1


def test_web_ui_is_served_at_the_root(gateway):
    index = httpx.get(gateway.url + "/")
    assert index.status_code == 200 and "<html" in index.text.lower()
    assert httpx.get(gateway.url + "/css/app.css").status_code == 200
    assert (
        httpx.get(gateway.url + "/js/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )
    assert (
        httpx.get(gateway.url + "/v1/chat/completions").status_code == 405
    )  # the UI does not shadow the API
