"""The sandbox's /metrics on a port of its own: what the chart lets Prometheus reach without the
run API (its NetworkPolicy opens only this port to scrapers)."""

from __future__ import annotations

import socket

import httpx
from fastapi.testclient import TestClient
from sandbox.app import create_app
from sandbox.settings import Settings

from chatforge.raylocal import free_port


def test_metrics_are_served_on_their_own_port_while_the_app_runs() -> None:
    port = free_port()
    app = create_app(Settings(mode="auto", metrics_port=port, max_concurrent=1, max_queue=1))
    with TestClient(app) as client:
        client.post("/v1/run", json={"code": "print(1)"})
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert r.status_code == 200
        assert "chatforge_sandbox_" in r.text
        # the run API is not on the metrics port
        assert (
            httpx.post(f"http://127.0.0.1:{port}/v1/run", json={"code": "print(1)"}, timeout=10).status_code
            != 200
        )
    # the exporter stops with the app
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
