"""`chatforge gateway serve` as a real process in local mode (tokenizer and engine in process), and
the CLI's surface."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import openai
import pytest
from gateway.settings import SettingsError, load_settings

from chatforge.cli import build_parser
from chatforge.raylocal import free_port


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
    port = free_port()
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


def test_settings_refuse_unsafe_or_invalid_values(monkeypatch):

    with pytest.raises(SettingsError, match="CHATFORGE_GATEWAY_KEY_PEPPER"):
        load_settings(host="0.0.0.0")  # keys are required off loopback, and the dev pepper is refused
    assert load_settings(host="0.0.0.0", key_pepper="a-real-secret").auth_required
    assert not load_settings().auth_required  # 127.0.0.1: local mode without keys
    monkeypatch.setenv("CHATFORGE_GATEWAY_PORT", "eighty")
    with pytest.raises(SettingsError, match="CHATFORGE_GATEWAY_PORT"):
        load_settings()
    monkeypatch.delenv("CHATFORGE_GATEWAY_PORT")
    with pytest.raises(SettingsError, match="ray_address"):
        load_settings(job_backend="ray")


def test_serve_refuses_bad_settings_with_a_message():
    result = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "gateway", "serve", "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("CHATFORGE_GATEWAY_")},
    )  # fmt: skip
    assert result.returncode == 2 and "CHATFORGE_GATEWAY_KEY_PEPPER" in result.stderr


def test_serve_refuses_a_bad_job_clusters_file_with_a_message(tmp_path):
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text("presets:\n  d12: {workers: 0, gpusPerWorker: 1}\ndefaultPreset: d12\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATFORGE_GATEWAY_")}
    env.update(CHATFORGE_GATEWAY_JOB_BACKEND="kuberay", CHATFORGE_GATEWAY_KUBE_CLUSTERS_FILE=str(clusters))
    result = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "gateway", "serve", "--port", "0"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "presets.d12.workers" in result.stderr and "KUBE_CLUSTERS_FILE" in result.stderr
    assert "Traceback" not in result.stderr


def test_local_mode_finds_the_checkpoints_tokenizer(artifacts, tmp_path):
    from gateway.runtime import local_tokenizer_name

    from chatforge.artifacts import ArtifactError, ArtifactStore

    store = ArtifactStore(artifacts)
    assert local_tokenizer_name(load_settings(checkpoint="tiny/sft"), store) == "default"  # from its meta
    assert local_tokenizer_name(load_settings(tokenizer_name="other"), store) == "other"
    assert local_tokenizer_name(load_settings(), store) == "default"  # the only one there
    with pytest.raises(ArtifactError, match="which tokenizer.*CHATFORGE_GATEWAY_TOKENIZER_NAME"):
        local_tokenizer_name(load_settings(), ArtifactStore(tmp_path))
