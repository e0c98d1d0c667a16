"""Fault tests: a real process of the system is killed (or its service stopped) in the middle of
work, and each test states what may be lost (nothing) and checks it, and that no process is left
behind. Shared here: an artifact store with a tokenizer and checkpoints, `chatforge gateway serve`
as a real process (`GatewayProcess`), and ways to list and wait out processes."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.raylocal import free_port
from tests.gateway.conftest import make_model
from tests.gateway.harness import RunningGateway

ROOT = Path(__file__).resolve().parents[2]
EMIT_STAGE = ROOT / "tests" / "gateway" / "emit_stage.py"
CHECKPOINT = "faults/sft"  # small, with a long context: a stream of 1,500 tokens lasts seconds
BIG_CHECKPOINT = "faults-big/sft"  # ~100 MB of weights: loading it takes long enough to be killed


@pytest.fixture(scope="session")
def fault_artifacts(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: object) -> Path:
    import torch

    from chatforge.model import GPT, GPTConfig

    root = tmp_path_factory.mktemp("fault-artifacts")
    store = ArtifactStore.from_env(root)
    tiny_tokenizer.save(store.tokenizer_path("default"))  # type: ignore[attr-defined]
    vocab = tiny_tokenizer.vocab_size  # type: ignore[attr-defined]
    model = make_model(vocab)
    config = {**model.config.to_dict(), "sequence_len": 2048}
    model = GPT(GPTConfig.from_dict(config))
    model.load_state_dict(make_model(vocab).state_dict())
    extra = {"tokenizer": "default", "stage": "sft"}
    checkpoint.save(store.stage_dir("faults", "sft"), 1, model.state_dict(), config=config, extra=extra)
    torch.manual_seed(1)
    big = GPT(GPTConfig(vocab_size=vocab, n_layer=8, n_embd=512, n_head=8, n_kv_head=8, sequence_len=256))
    checkpoint.save(
        store.stage_dir("faults-big", "sft"), 1, big.state_dict(), config=big.config.to_dict(), extra=extra
    )
    return root


@dataclass
class GatewayProcess:
    """`chatforge gateway serve` as its own process, as an operator runs it on one machine."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    seen: list[psutil.Process] = field(default_factory=list)  # every descendant ever listed

    def descendants(self) -> list[psutil.Process]:
        """The processes under the gateway now (remembered, so they can be checked after a kill)."""
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        known = {(p.pid, p.create_time()) for p in self.seen}
        for p in found:
            try:
                if (p.pid, p.create_time()) not in known:
                    self.seen.append(p)
            except psutil.NoSuchProcess:
                continue
        return found

    def kill(self) -> None:
        self.descendants()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        self.descendants()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_gateway(tmp: Path, artifacts: Path, port: int, **env: str) -> GatewayProcess:
    """Start a gateway (local mode, the fault checkpoint, embedded Redis under `tmp`) and wait for it."""
    full_env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    full_env.update(
        CHATFORGE_ARTIFACTS=str(artifacts),
        CHATFORGE_REDIS_DIR=str(tmp / "redis"),
        CHATFORGE_GATEWAY_PORT=str(port),
        CHATFORGE_GATEWAY_CHECKPOINT=CHECKPOINT,
        CHATFORGE_GATEWAY_JOB_BACKEND="local",
        CHATFORGE_GATEWAY_JOB_COMMAND=f"{shlex.quote(sys.executable)} {shlex.quote(str(EMIT_STAGE))} --step-s 0.3",
        OMP_NUM_THREADS="1",
    )
    full_env.update(env)
    log = tmp / f"gateway-{time.monotonic_ns()}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatforge.cli", "gateway", "serve"],
            env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
    gateway = GatewayProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}:\n{gateway.log_text()[-3000:]}")
        try:
            if httpx.get(gateway.url + "/healthz", timeout=2).status_code == 200:
                gateway.descendants()
                return gateway
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the gateway did not answer in time:\n{gateway.log_text()[-3000:]}")
        time.sleep(0.1)


@pytest.fixture
def gateways(tmp_path: Path, fault_artifacts: Path) -> Iterator[callable]:  # type: ignore[valid-type]
    """Start gateway processes on one port and one embedded Redis directory; all gone at the end."""
    started: list[GatewayProcess] = []
    port = free_port()

    def start(**env: str) -> GatewayProcess:
        gateway = start_gateway(tmp_path, fault_artifacts, port, **env)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.proc.poll() is None:
            gateway.terminate()
    leftovers = survivors([p for g in started for p in g.seen], timeout_s=30)
    for p in leftovers:
        p.kill()
    assert not leftovers, f"processes outlived their gateways: {describe(leftovers)}"


def survivors(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """The processes still running (zombies count as gone) once `timeout_s` has passed, or sooner
    when none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def describe(processes: list[psutil.Process]) -> str:
    out = []
    for p in processes:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.Error:
            out.append(str(p.pid))
    return "; ".join(out)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def chat_body(max_tokens: int, *, stream: bool = True) -> dict[str, object]:
    return {
        "model": "chatforge",
        "messages": [{"role": "user", "content": "tell me about rivers"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    }


@pytest.fixture
def redis_dir(tmp_path: Path) -> Path:
    return tmp_path / "redis"


def embedded_redis(directory: Path) -> object:
    """A Redis server of this test process (chatforge.redisconn's embedded one), stoppable and
    restartable on the same socket."""
    from chatforge.redisconn import EmbeddedRedis

    return EmbeddedRedis.start(directory)


def in_process_gateway(
    artifacts: Path, redis_url: str, tokenizer_target: str = "", inference_url: str = "", **overrides: object
) -> RunningGateway:
    """A gateway on port 0 in this process (tests/gateway/harness.py): the engine in process on the
    fault checkpoint, or the Serve app at `inference_url`; the tokenizer over gRPC at
    `tokenizer_target`, else in process."""
    import redis as redis_client
    from gateway.codec import connect_grpc
    from gateway.local_inference import LocalInference
    from gateway.runtime import build_codec
    from gateway.settings import Settings, load_settings
    from inference_svc.config import EngineConfig

    settings = load_settings(
        **{
            "artifacts_root": str(artifacts), "redis_url": redis_url, "port": 0, "auth": "off",
            "tokenizer_name": "default", "job_backend": "ray", "ray_address": "http://127.0.0.1:9",
            "rate_request_burst": 100_000, "rate_requests_per_min": 1e9, **overrides,
        }
    )  # fmt: skip

    async def build(s: Settings) -> tuple[object, object, object]:
        from gateway.jobs.ray_jobs import RayJobsBackend

        codec = await connect_grpc(tokenizer_target, wait_s=30) if tokenizer_target else await build_codec(s)
        if inference_url:
            from gateway.remote_inference import RemoteInference

            remote = RemoteInference(inference_url, model_id=s.model_id)
            await remote.refresh()
            return codec, remote, RayJobsBackend(s.ray_address, name="ray")
        local = LocalInference(
            model_id=s.model_id, artifacts_root=s.artifacts_root,
            engine_config=EngineConfig(num_blocks=512, max_num_seqs=16, max_num_batched_tokens=256),
        )  # fmt: skip
        await local.deploy(CHECKPOINT)
        return codec, local, RayJobsBackend(s.ray_address, name="ray")

    client = redis_client.Redis.from_url(redis_url, decode_responses=True)
    return RunningGateway(settings, build, client).start(timeout_s=120)
