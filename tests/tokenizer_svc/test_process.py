"""`chatforge serve-tokenizer` as a real process: SIGHUP reloads, SIGTERM stops cleanly; the client CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from chatforge.artifacts import ArtifactStore
from chatforge.tokenizer_client import TokenizerClient


def _chatforge(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "chatforge.cli", *args], env={**os.environ, **(env or {})}, text=True, **kw
    )


def _wait_for_line(proc: subprocess.Popen, pattern: str, timeout_s: float = 30) -> re.Match:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    proc.kill()
    raise AssertionError(f"no line matching {pattern!r}; the process said:\n{''.join(seen)}")


@pytest.mark.slow
def test_serve_reload_on_sighup_and_stop_on_sigterm(tmp_path, tiny_tokenizer, other_tokenizer):
    store = ArtifactStore.from_env(tmp_path)
    tiny_tokenizer.save(store.tokenizer_path("default"))
    proc = _chatforge(
        "serve-tokenizer", "--port", "0", "--metrics-port", "0",
        env={"CHATFORGE_ARTIFACTS": str(tmp_path)}, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        target = _wait_for_line(proc, r"listening on (127\.0\.0\.1:\d+)").group(1)
        with TokenizerClient(target) as client:
            assert client.info().fingerprint == tiny_tokenizer.fingerprint()
            other_tokenizer.save(store.tokenizer_path("default"))  # re-trained in place
            proc.send_signal(signal.SIGHUP)
            _wait_for_line(proc, r"reloaded tokenizer 'default'")
            assert client.info().fingerprint == other_tokenizer.fingerprint()

            result = subprocess.run(
                [sys.executable, "-m", "chatforge.cli", "tokenizer-client", "--target", target, "encode", "hi 😀"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert json.loads(result.stdout) == other_tokenizer.encode("hi 😀")
            result = subprocess.run(
                [sys.executable, "-m", "chatforge.cli", "tokenizer-client", "--target", target, "decode", "99999"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        _wait_for_line(proc, r"stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_missing_tokenizer_with_a_message(tmp_path):
    proc = _chatforge(
        "serve-tokenizer", "--name", "nope", "--artifacts", str(tmp_path), "--port", "0", "--metrics-port", "0",
        stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no tokenizer named 'nope'" in err
