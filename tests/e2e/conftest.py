"""The stack the end-to-end suite runs against: one already running (`CHATFORGE_E2E_URL`, e.g. the
docker compose stack), or `chatforge up` started here on free ports and stopped at the end, with a
check that nothing it started is left running and no port it used is still taken.

Settings (all optional; tests/e2e/README.md says how to point the suite at a stack):

- `CHATFORGE_E2E_URL`: the gateway's base URL; unset: `chatforge up` here.
- `CHATFORGE_E2E_ADMIN_KEY`, or `CHATFORGE_E2E_ADMIN_KEY_COMMAND` (a shell command that prints
  one): the API key with the `admin` scope, for a gateway that checks keys.
- `CHATFORGE_E2E_METRICS`: `name=url,...` for each service's /metrics (`gateway`, `inference`,
  `tokenizer`, `sandbox`); the gateway's defaults to `<url>/metrics`.
- `CHATFORGE_E2E_CORPUS_DIR`: the corpus directory *as the stack's training jobs see it*
  (default: this checkout's data/corpus).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e import seed

ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 420.0  # Ray's head and a Serve replica on a loaded 2-core machine
SERVICES = ("gateway", "inference", "tokenizer", "sandbox")


@dataclass
class Stack:
    url: str  # the gateway
    admin_key: str  # "" where the gateway checks no key (127.0.0.1)
    metrics: dict[str, str]  # service -> its /metrics URL
    corpus_dir: str
    state_dir: Path | None = None  # `chatforge up`'s, when the suite started the stack

    @property
    def api(self) -> str:
        return self.url + "/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"} if self.admin_key else {}

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers=self.headers(), timeout=120.0, trust_env=False, **kwargs
        )  # type: ignore[arg-type]


# Module-scoped: the stack is down before the next module starts, so no later test shares the
# machine (or its process tree) with a running Ray head and Serve replica.
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    corpus = os.environ.get("CHATFORGE_E2E_CORPUS_DIR") or str(ROOT / "data" / "corpus")
    url = os.environ.get("CHATFORGE_E2E_URL", "").rstrip("/")
    if url:
        metrics = {"gateway": url + "/metrics", **_parse_metrics(os.environ.get("CHATFORGE_E2E_METRICS", ""))}
        yield Stack(url, _admin_key(), metrics, corpus)
        return
    if not (Path(corpus) / "manifest.json").is_file():
        pytest.fail(f"no corpus in {corpus} for the training job: `make data` builds it")
    yield from _own_stack(tmp_path_factory.mktemp("e2e"), corpus)


@pytest.fixture(scope="module")
def served(stack: Stack) -> Stack:
    """The stack serving the suite's checkpoint (tests.e2e.seed), deployed through the API when it
    serves something else."""
    with stack.client() as http:
        models = http.get("/v1/models").json()["data"]
        if not models or not str(models[0].get("checkpoint", "")).startswith(seed.CHECKPOINT):
            deploy(http, seed.CHECKPOINT)
    return stack


def deploy(http: httpx.Client, checkpoint: str) -> dict[str, object]:
    r = http.post("/v1/deployments", json={"checkpoint": checkpoint}, timeout=300)
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["state"] == "serving", record
    return dict(record)


# --- `chatforge up` here ------------------------------------------------------------------------------


def _own_stack(tmp: Path, corpus: str) -> Iterator[Stack]:
    artifacts = tmp / "artifacts"
    seed.write(artifacts)
    state_dir = tmp / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CHATFORGE_ARTIFACTS")}
    env["OMP_NUM_THREADS"] = "1"
    out = open(tmp / "up.log", "wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "chatforge.cli", "up", "--artifacts", str(artifacts), "--checkpoint",
         seed.CHECKPOINT, "--state-dir", str(state_dir), "--free-ports"],
        cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip
    owner = psutil.Process(up.pid)
    seen: dict[tuple[int, float], psutil.Process] = {}
    try:
        state = _wait_up(up, state_dir / "up.json", tmp / "up.log", owner, seen)
        urls = state["urls"]
        metrics = {name: urls[f"{name}_metrics"] for name in SERVICES}
        stack = Stack(urls["chat"].rstrip("/"), "", metrics, corpus, state_dir)
        yield stack
        _remember(owner, seen)
        ports = _ports(state)
        _check_status(state_dir, env)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "chatforge.cli", "down", "--state-dir", str(state_dir)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
        out.close()
    assert down.returncode == 0, down.stdout + down.stderr
    assert up.returncode == 0, (tmp / "up.log").read_text(errors="replace")[-3000:]
    assert_stopped(list(seen.values()), ports, after="`chatforge down`")
    assert not (state_dir / "up.json").exists()


def assert_stopped(processes: list[psutil.Process], ports: list[int], *, after: str) -> None:
    """Every one of `processes` gone (within 30 s; survivors are killed, then reported) and nothing
    listening on `ports`."""
    left = _survivors(processes, timeout_s=30)
    for p in left:
        p.kill()
    assert not left, f"processes outlived {after}: {_describe(left)}"
    taken = [port for port in ports if not _port_free(port)]
    assert not taken, f"ports still taken after {after}: {taken}"


def _check_status(state_dir: Path, env: dict[str, str]) -> None:
    """`chatforge status` lists every service `up` started, each healthy, after the whole suite."""
    result = subprocess.run(
        [sys.executable, "-m", "chatforge.cli", "status", "--state-dir", str(state_dir)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {"redis", "ray", *SERVICES}, result.stdout
    assert all(line.rstrip().endswith(" ok") for line in rows.values()), result.stdout


def _wait_up(
    up: subprocess.Popen[bytes], state_file: Path, log: Path, owner: psutil.Process, seen: dict
) -> dict:
    deadline = time.monotonic() + UP_TIMEOUT_S
    while True:
        _remember(owner, seen)
        if up.poll() is not None:
            raise RuntimeError(
                f"chatforge up exited with {up.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            )
        try:
            state = json.loads(state_file.read_text())
            if state.get("ready"):
                return dict(state)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"chatforge up was not ready in {UP_TIMEOUT_S:.0f} s:\n{log.read_text(errors='replace')[-4000:]}"
            )
        time.sleep(0.5)


def _remember(owner: psutil.Process, seen: dict[tuple[int, float], psutil.Process]) -> None:
    """Every process under `up` (its services, Ray's workers, the jobs' processes), so that the end
    can check each of them is gone."""
    try:
        for p in owner.children(recursive=True):
            try:
                seen.setdefault((p.pid, p.create_time()), p)
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        pass


def _ports(state: dict) -> list[int]:
    ports = []
    for url in state["urls"].values():
        tail = url.split("://", 1)[-1].split("/", 1)[0]
        if ":" in tail:
            ports.append(int(tail.rsplit(":", 1)[1]))
    for service in state["services"].values():
        tail = service["url"].split("://", 1)[-1].split("/", 1)[0]
        if ":" in tail and tail.rsplit(":", 1)[1].isdigit():
            ports.append(int(tail.rsplit(":", 1)[1]))
    return sorted(set(ports))


def _port_free(port: int) -> bool:
    """Nothing listens there (bound as the services bind: connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _survivors(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(processes: list[psutil.Process]) -> str:
    out = []
    for p in processes:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            out.append(str(p.pid))
    return "; ".join(out)


# --- a stack that runs elsewhere --------------------------------------------------------------------


def _admin_key() -> str:
    key = os.environ.get("CHATFORGE_E2E_ADMIN_KEY", "")
    command = os.environ.get("CHATFORGE_E2E_ADMIN_KEY_COMMAND", "")
    if key or not command:
        return key
    result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"CHATFORGE_E2E_ADMIN_KEY_COMMAND failed ({result.returncode}): {result.stderr.strip()}")
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        pytest.fail("CHATFORGE_E2E_ADMIN_KEY_COMMAND printed no key")
    return lines[-1].split()[-1]  # the key is the last word printed


def _parse_metrics(value: str) -> dict[str, str]:
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, url = item.partition("=")
        if not sep or name not in SERVICES:
            pytest.fail(
                f"CHATFORGE_E2E_METRICS: {item!r} is not <service>=<url> with a service of {SERVICES}"
            )
        out[name] = url
    return out
