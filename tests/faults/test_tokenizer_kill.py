"""The tokenizer service is killed (SIGKILL) under a gateway in remote-tokenizer mode, then started
again on the same port.

What may be lost: nothing. While it is down, chat answers 503 naming the tokenizer at once (no
hang, no 500) and /readyz says which part fails; requests that do not need the tokenizer are
served; once it is back, the same gateway, never restarted, serves chat again.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import httpx
import pytest

from .conftest import chat_body, embedded_redis, free_port, in_process_gateway


def start_tokenizer(artifacts: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatforge.cli", "serve-tokenizer", "--artifacts", str(artifacts),
         "--name", "default", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{port}")).result(timeout=1)
            return proc
        except grpc.FutureTimeoutError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("the tokenizer service did not start") from None


@pytest.fixture
def tokenizer_port() -> int:
    return free_port()


def test_a_killed_tokenizer_service_is_a_503_then_recovers(tmp_path, fault_artifacts, tokenizer_port):
    cleanup = contextlib.ExitStack()  # whatever started is stopped, even when a later start fails
    tokenizers = [start_tokenizer(fault_artifacts, tokenizer_port)]
    cleanup.callback(lambda: [(t.kill(), t.wait()) for t in tokenizers])
    tokenizer = tokenizers[0]
    try:
        server = embedded_redis(tmp_path / "redis")
        cleanup.callback(server.stop)  # type: ignore[attr-defined]
        gateway = in_process_gateway(
            fault_artifacts, server.url, tokenizer_target=f"127.0.0.1:{tokenizer_port}"
        )  # type: ignore[attr-defined]
        cleanup.callback(gateway.stop)
        before = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60)
        assert before.status_code == 200, before.text

        tokenizer.send_signal(signal.SIGKILL)
        tokenizer.wait()
        started = time.monotonic()
        down = httpx.post(gateway.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60)
        assert down.status_code == 503, down.text
        assert time.monotonic() - started < 15  # the codec's deadline, not a hang
        assert down.json()["error"]["code"] == "tokenizer_unavailable"
        assert "tokenizer" in down.json()["error"]["message"]
        ready = httpx.get(gateway.url + "/readyz", timeout=30)
        assert ready.status_code == 503 and "tokenizer" in ready.text
        assert httpx.get(gateway.url + "/v1/models", timeout=30).status_code == 200  # the rest still serves

        tokenizer = start_tokenizer(fault_artifacts, tokenizer_port)  # the same address, a new process
        tokenizers.append(tokenizer)
        deadline = time.monotonic() + 30
        while True:  # gRPC reconnects with backoff; the gateway is never restarted
            again = httpx.post(
                gateway.url + "/v1/chat/completions", json=chat_body(8, stream=False), timeout=60
            )
            if again.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert again.status_code == 200, again.text
        assert (
            again.json()["choices"][0]["message"]["content"]
            == before.json()["choices"][0]["message"]["content"]
        )
        assert httpx.get(gateway.url + "/readyz", timeout=30).status_code == 200
    finally:
        cleanup.close()
