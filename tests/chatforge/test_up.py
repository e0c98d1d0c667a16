"""`chatforge up`'s checks before anything starts, as a real command: a missing checkpoint, a taken
port, a stack already running are one line each, and nothing is started. The whole stack coming up,
serving and going down is tests/e2e/."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.lifetime import ProcessRef
from chatforge.up import UpError, newest_checkpoint


def up(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CHATFORGE_ARTIFACTS")}
    return subprocess.run(
        [sys.executable, "-m", "chatforge.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def store_with(root: Path, tokenizer: object, *names: str) -> ArtifactStore:
    import torch

    store = ArtifactStore.from_env(root)
    tokenizer.save(store.tokenizer_path("tok"))  # type: ignore[attr-defined]
    for name in names:
        run, stage = name.split("/")
        weights = {"w": torch.zeros(1)}
        checkpoint.save(store.stage_dir(run, stage), 1, weights, config={}, extra={"tokenizer": "tok"})
        time.sleep(0.02)  # distinct modification times: "newest" is well defined
    return store


def start_up(tmp_path: Path, tokenizer: object, **popen: Any) -> subprocess.Popen[bytes]:
    """`chatforge up` on free ports, over a store with one chat checkpoint (random weights); its
    output goes to up.log, its state to tmp_path/state."""
    from tests.gateway.conftest import make_model

    store = ArtifactStore.from_env(tmp_path / "art")
    tokenizer.save(store.tokenizer_path("tok"))  # type: ignore[attr-defined]
    model = make_model(tokenizer.vocab_size)  # type: ignore[attr-defined]
    checkpoint.save(store.stage_dir("r1", "sft"), 1, model.state_dict(), config=model.config.to_dict(),
                    extra={"tokenizer": "tok"})  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CHATFORGE_ARTIFACTS")}
    env["OMP_NUM_THREADS"] = "1"
    with open(tmp_path / "up.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "chatforge.cli", "up", "--artifacts", str(store.root), "--state-dir", "state",
             "--free-ports"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, **popen,
        )  # fmt: skip


def assert_nothing_started(tmp_path: Path) -> None:
    assert not (tmp_path / "state" / "up.json").exists()
    assert not (tmp_path / "state" / "logs").exists()


def test_no_checkpoint_is_one_line_and_nothing_starts(tmp_path):
    result = up(
        "up", "--artifacts", str(tmp_path / "empty"), "--state-dir", "state", "--free-ports", cwd=tmp_path
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no trained checkpoint" in lines[0] and "make demo" in lines[0], result.stderr
    assert_nothing_started(tmp_path)


def test_a_named_checkpoint_that_does_not_exist_is_one_line(tmp_path, tiny_tokenizer):
    store = store_with(tmp_path / "art", tiny_tokenizer, "r1/sft")
    result = up("up", "--artifacts", str(store.root), "--checkpoint", "r1/nope", "--state-dir", "state",
                "--free-ports", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "r1/nope" in lines[0] and "--checkpoint" in lines[0], result.stderr
    assert_nothing_started(tmp_path)


def test_a_taken_port_is_one_line_naming_it_and_its_flag(tmp_path, tiny_tokenizer):
    store = store_with(tmp_path / "art", tiny_tokenizer, "r1/sft")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = up("up", "--artifacts", str(store.root), "--state-dir", "state", "--sandbox-port", str(port),
                    cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port} (sandbox) is taken" in lines[0] and "--sandbox-port" in lines[0]
    assert_nothing_started(tmp_path)


def test_a_running_stack_is_not_started_twice(tmp_path, tiny_tokenizer):
    store = store_with(tmp_path / "art", tiny_tokenizer, "r1/sft")
    state = tmp_path / "state"
    state.mkdir()
    live = {"up": ProcessRef.current().to_dict(), "urls": {"chat": "http://127.0.0.1:1/"}}  # this test: alive
    (state / "up.json").write_text(json.dumps(live))
    result = up("up", "--artifacts", str(store.root), "--state-dir", "state", "--free-ports", cwd=tmp_path)
    assert result.returncode == 2
    assert "already running" in result.stderr and "chatforge down" in result.stderr


def test_down_and_status_without_a_stack(tmp_path):
    down = up("down", "--state-dir", "state", cwd=tmp_path)
    assert down.returncode == 0 and "nothing to stop" in down.stdout
    status = up("status", "--state-dir", "state", cwd=tmp_path)
    assert status.returncode == 3 and "not running" in status.stdout


def test_newest_checkpoint_prefers_a_chat_stage(tmp_path, tiny_tokenizer):
    store = store_with(tmp_path / "art", tiny_tokenizer, "a/sft", "b/mid", "c/base")
    assert newest_checkpoint(store) == "b/mid"  # c/base is newer, but does not chat
    only_base = store_with(tmp_path / "art2", tiny_tokenizer, "c/base")
    assert newest_checkpoint(only_base) == "c/base"
    with pytest.raises(UpError, match="no trained checkpoint"):
        newest_checkpoint(ArtifactStore.from_env(tmp_path / "none"))


@pytest.mark.slow  # starts a Ray head and the services: ~20-60 s on two cores
def test_a_killed_up_takes_every_service_along_and_down_cleans_up(tmp_path, tiny_tokenizer):
    """SIGKILL gives `up` no chance to stop anything: each service's parent-death signal must."""
    import psutil

    state_file = tmp_path / "state" / "up.json"
    proc = start_up(tmp_path, tiny_tokenizer)
    try:
        deadline = time.monotonic() + 300
        while True:  # every service started (ready or not): the gateway is the last one spawned
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                if "gateway" in json.loads(state_file.read_text())["services"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "up did not start its services in time"
            time.sleep(0.2)
        started = psutil.Process(proc.pid).children(recursive=True)
        assert (
            len(started) >= 6
        )  # redis, ray start (and Ray's daemons), tokenizer, sandbox, inference, gateway
        proc.kill()
        proc.wait(10)
        # Ray's head stops its daemons on the signal; on a loaded two-core machine that can take a while
        gone, alive = psutil.wait_procs(started, timeout=120)
        names = []
        for p in alive:
            try:
                names.append(" ".join(p.cmdline())[:100])
                p.kill()
            except psutil.Error:
                continue
        assert not names, f"outlived a killed `up`: {names}"
    finally:
        if proc.poll() is None:
            proc.kill()
    down = up("down", "--state-dir", "state", cwd=tmp_path)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
    assert not state_file.exists()


@pytest.mark.slow  # a whole stack up, then down: ~20-60 s on two cores
def test_ctrl_c_stops_every_service_and_frees_every_port(tmp_path, tiny_tokenizer):
    """Ctrl-C in the terminal: SIGINT to `up`'s process group once the stack is ready. `up` exits 0,
    every process it started (Ray's daemons included) is gone, every port is free, the state file
    is removed."""
    import signal

    import psutil

    from tests.e2e.conftest import _ports, _remember, _wait_up, assert_stopped

    state_file = tmp_path / "state" / "up.json"
    # its own process group, as a shell gives a foreground job: the terminal signals the group
    proc = start_up(tmp_path, tiny_tokenizer, process_group=0)
    owner = psutil.Process(proc.pid)
    seen: dict[tuple[int, float], psutil.Process] = {}
    try:
        state = _wait_up(proc, state_file, tmp_path / "up.log", owner, seen)
        _remember(owner, seen)
        ports = _ports(state)
        assert len(seen) >= 6 and len(ports) >= 6, (len(seen), ports)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(180) == 0, (tmp_path / "up.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_stopped(list(seen.values()), ports, after="Ctrl-C")
    assert not state_file.exists()
