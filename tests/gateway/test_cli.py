"""`chatforge gateway serve` as a real process in local mode (tokenizer and engine in process), and
the CLI's surface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import openai

from chatforge.cli import build_parser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_surface():
    parser = build_parser()
    args = parser.parse_args(
        ["gateway", "serve", "--port", "9", "--checkpoint", "r/sft", "--job-backend", "kuberay"]
    )
    assert (args.port, args.checkpoint, args.job_backend) == (9, "r/sft", "kuberay")
    assert parser.parse_args(["keys", "create", "me", "--scope", "admin", "--scope", "chat"]).scope == [
        "admin",
        "chat",
    ]
    assert parser.parse_args(["keys", "revoke", "abc"]).key_id == "abc"


def test_serve_in_local_mode(artifacts, redis_url, tmp_path):
    port = _free_port()
    env = {
        **os.environ, "REDIS_URL": redis_url, "CHATFORGE_ARTIFACTS": str(artifacts),
        "CHATFORGE_GATEWAY_WEB_DIR": str(tmp_path),  # no UI here
    }  # fmt: skip
    cmd = [
        sys.executable,
        "-m",
        "chatforge.cli",
        "gateway",
        "serve",
        "--port",
        str(port),
        "--checkpoint",
        "tiny/sft",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert ready is not None and ready.status_code == 200, ready.text if ready else "no answer"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)
        reply = client.chat.completions.create(
            model="chatforge", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage.completion_tokens >= 1
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "API keys are OFF" in output  # local mode says so at start
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit status -15 here)
    assert "Application shutdown complete" in output and proc.returncode in (0, -15), output
