"""Fixtures for the sandbox tests: a namespaces-mode executor and a real service on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sandbox.executor import SandboxExecutor
from sandbox.isolation import SandboxUnavailable
from sandbox.process import pids_of
from sandbox.settings import Settings

from chatforge.sandbox_client import SandboxClient
from tests.capabilities import why_not

SERVICE_SLOTS = 4
SERVICE_QUEUE = 12
UID_BASE = Settings.model_fields["uid_base"].default


def namespaces_executor(**overrides: object) -> SandboxExecutor:
    settings = Settings(mode="namespaces", uid_base=UID_BASE, **overrides)  # type: ignore[arg-type]
    try:
        return SandboxExecutor(settings)
    except SandboxUnavailable as e:
        # the fix is the one `make test`'s summary gives (tests/capabilities.py)
        fix = why_not("bubblewrap") or why_not("namespaces") or "see `python tests/capabilities.py`"
        pytest.skip(f"user namespaces unavailable on this host, namespaces-mode tests cannot run: {e}; {fix}")


def leftover_pids(uids: list[int], include_zombies: bool = True) -> list[int]:
    """Processes owned by these run uids (which exist only when tests run as root). Namespaces
    mode leaves not even zombies; weak mode's killed daemons are the host init's to reap."""
    return [pid for uid in uids for pid, zombie in pids_of(uid) if include_zombies or not zombie]


@pytest.fixture(scope="module")
def executor() -> Iterator[SandboxExecutor]:
    with namespaces_executor(max_concurrent=2, max_queue=4) as ex:
        yield ex


@dataclass
class Service:
    url: str
    pid: int
    workdir: Path
    secret: str
    client: SandboxClient


@pytest.fixture(scope="session")
def service() -> Iterator[Service]:
    """`chatforge sandbox serve` as a real process, with a secret in its environment and its cwd."""
    namespaces_executor()  # skips, with the reason, where namespaces cannot work
    workdir = Path(tempfile.mkdtemp(prefix="sbx-svc-", dir="/tmp"))
    secret = "s3cr3t-" + os.urandom(8).hex()
    (workdir / "secret.txt").write_text(secret)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, SANDBOX_TEST_SECRET=secret, CHATFORGE_SANDBOX_UID_BASE=str(UID_BASE))
    cmd = [
        sys.executable,
        "-m",
        "chatforge.cli",
        "sandbox",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    cmd += ["--mode", "namespaces", "--max-concurrent", str(SERVICE_SLOTS), "--max-queue", str(SERVICE_QUEUE)]
    log = open(workdir / "service.log", "wb")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = SandboxClient(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while not client.healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("sandbox service did not start:\n" + (workdir / "service.log").read_text())
        time.sleep(0.1)
    try:
        yield Service(client.base_url, proc.pid, workdir, secret, client)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
