"""Redis is stopped in the middle of a streamed chat and started again, under a running gateway.

What may be lost: nothing. The stream that had begun needs no Redis and finishes whole; while Redis
is down every request that needs it is a 503 that names Redis, at once (no hang, no 500, no stack
trace), and the rest is served; once Redis is back (same address, its data saved at the stop) the
same gateway, never restarted, serves everything again and finds what was stored before.
"""

from __future__ import annotations

import json
import time

import httpx

from .conftest import chat_body, embedded_redis, in_process_gateway


def sse_events(response: httpx.Response):  # type: ignore[no-untyped-def]
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: ") :]


def test_redis_restarted_mid_stream(tmp_path, fault_artifacts):
    from chatforge.redisconn import EmbeddedRedis

    server = embedded_redis(tmp_path / "redis")
    gateway = in_process_gateway(fault_artifacts, server.url)  # type: ignore[attr-defined]
    try:
        stored = httpx.post(
            gateway.url + "/v1/conversations", json={"title": "kept", "messages": []}, timeout=30
        )
        assert stored.status_code in (200, 201), stored.text
        expected = httpx.post(
            gateway.url + "/v1/chat/completions", json=chat_body(400, stream=False), timeout=120
        )
        assert expected.status_code == 200, expected.text

        text, done = [], False
        with httpx.stream(
            "POST", gateway.url + "/v1/chat/completions", json=chat_body(400), timeout=120
        ) as r:
            assert r.status_code == 200
            for i, data in enumerate(sse_events(r)):
                if i == 3:
                    server.stop()  # type: ignore[attr-defined]  # Redis goes away mid-stream
                    outage = _while_down(gateway.url)
                if data == "[DONE]":
                    done = True
                    break
                delta = json.loads(data)["choices"]
                if delta:
                    text.append(delta[0]["delta"].get("content") or "")
        assert done  # the stream that had begun finished whole
        assert "".join(text) == expected.json()["choices"][0]["message"]["content"]

        for what, (status, body, took) in outage.items():
            assert status == 503, (what, status, body)
            assert "redis" in body.lower(), (what, body)
            assert "Traceback" not in body
            assert took < 10, (what, took)
        server = EmbeddedRedis.start(tmp_path / "redis")  # back, on the same socket
        deadline = time.monotonic() + 20
        while True:
            after = httpx.post(
                gateway.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60
            )
            if after.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert after.status_code == 200, after.text
        listed = httpx.get(gateway.url + "/v1/conversations", timeout=30).json()
        assert stored.json()["id"] in json.dumps(listed)  # saved at the stop, loaded at the start
        assert httpx.get(gateway.url + "/readyz", timeout=30).status_code == 200
    finally:
        gateway.stop()
        server.stop()  # type: ignore[attr-defined]


def _while_down(url: str) -> dict[str, tuple[int, str, float]]:
    """What a few routes answer while Redis is down: (status, body, seconds)."""
    out = {}
    for what, method, path, body in (
        ("chat", "POST", "/v1/chat/completions", chat_body(8, stream=False)),
        ("jobs", "GET", "/v1/jobs", None),
        ("conversations", "GET", "/v1/conversations", None),
        ("readyz", "GET", "/readyz", None),
    ):
        started = time.monotonic()
        r = httpx.request(method, url + path, json=body, timeout=60)
        out[what] = (r.status_code, r.text, time.monotonic() - started)
    return out
