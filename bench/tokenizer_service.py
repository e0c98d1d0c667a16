"""Tokenizer service benchmark: Encode over gRPC on 127.0.0.1 against the in-process tokenizer.

Trains a tokenizer on text that ships with Python (the standard library's sources), starts the
service as its own process (`python -m tokenizer_svc serve-tokenizer`, port 0), and encodes the same
prompt-sized text (~1 KB, a typical chat prompt) three ways in the same run:

  in-process   `Tokenizer.encode` in a loop, one thread: the reference
  gRPC x1      one client, one request at a time: the latency a gateway request pays
  gRPC xN      N client threads over one channel: the service's throughput

The headline is gRPC xN requests/s and its ratio to in-process. The goal is honest: a unary gRPC
call from Python costs on the order of 100-200 us of client and server work on one core against
~20-40 us for the encode itself, so ratios near 0.1x are what a Python gRPC service can do.

    python bench/tokenizer_service.py [--quick] [--concurrency 4] [--duration-s 10]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from chatforge.artifacts import ArtifactStore
from chatforge.tokenizer import Tokenizer
from chatforge.tokenizer_client import TokenizerClient

GOAL_RATIO = 0.05
PROMPT_CHARS = 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller tokenizer, 2 s per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads for the throughput run")
    parser.add_argument("--duration-s", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()
    duration_s = args.duration_s or (2.0 if args.quick else 10.0)

    texts = stdlib_texts(max_chars=2_000_000 if args.quick else 10_000_000)
    t0 = time.perf_counter()
    tokenizer = Tokenizer.train(texts, vocab_size=args.vocab, name="bench")
    print(
        f"trained vocab {tokenizer.vocab_size} on {sum(map(len, texts)) / 1e6:.1f} M chars in {time.perf_counter() - t0:.1f} s"
    )
    prompt = next(t for t in texts if len(t) >= PROMPT_CHARS)[:PROMPT_CHARS]
    n_tokens = len(tokenizer.encode(prompt))
    print(f"request text: {len(prompt)} chars, {n_tokens} tokens")

    local = measure(lambda: tokenizer.encode(prompt), duration_s, concurrency=1)
    report("in-process encode", local)

    with tempfile.TemporaryDirectory(dir="/tmp") as root, Service(tokenizer, Path(root)) as target:
        with TokenizerClient(target, timeout_s=30) as client:
            client.wait_ready(30)
            assert client.encode(prompt) == tokenizer.encode(prompt), "the service gives other ids"
            single = measure(lambda: client.encode(prompt), duration_s, concurrency=1)
            report("gRPC encode x1", single)
            many = measure(lambda: client.encode(prompt), duration_s, concurrency=args.concurrency)
            report(f"gRPC encode x{args.concurrency}", many)

    ratio = many.rate / local.rate
    print(
        f"added latency per request: {(single.p50 - local.p50) * 1e6:.0f} us at p50, "
        f"{(single.p99 - local.p99) * 1e6:.0f} us at p99"
    )
    print(f"tokenizer_service: {many.rate:.0f} req/s ({ratio:.2f}x vs in-process; goal >= {GOAL_RATIO}x)")
    return 0


class Result:
    def __init__(self, latencies_s: list[float], elapsed_s: float):
        latencies_s.sort()
        self.n = len(latencies_s)
        self.rate = self.n / elapsed_s
        self.p50 = statistics.median(latencies_s)
        self.p99 = latencies_s[min(self.n - 1, int(0.99 * self.n))]


def measure(call: Callable[[], object], duration_s: float, concurrency: int) -> Result:
    """Run `call` from `concurrency` threads for `duration_s` after a short warm-up."""
    for _ in range(200):
        call()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    stop = threading.Event()

    def worker(out: list[float]) -> None:
        clock = time.perf_counter
        while not stop.is_set():
            t = clock()
            call()
            out.append(clock() - t)

    threads = [threading.Thread(target=worker, args=(out,)) for out in latencies]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(duration_s)
    stop.set()
    for t in threads:
        t.join()
    return Result([x for out in latencies for x in out], time.perf_counter() - t0)


def report(label: str, r: Result) -> None:
    print(
        f"{label:<20} {r.rate:>9.0f} req/s   p50 {r.p50 * 1e6:>7.0f} us   p99 {r.p99 * 1e6:>7.0f} us   ({r.n} requests)"
    )


class Service:
    """The service as its own process on 127.0.0.1, serving `tokenizer` from a temporary store."""

    def __init__(self, tokenizer: Tokenizer, root: Path):
        tokenizer.save(ArtifactStore.from_env(root).tokenizer_path("bench"))
        self._cmd = [sys.executable, "-m", "tokenizer_svc", "serve-tokenizer", "--name", "bench"]
        self._cmd += ["--artifacts", str(root), "--port", "0", "--metrics-port", "0"]
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        self._proc = subprocess.Popen(self._cmd, stderr=subprocess.PIPE, text=True)
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            if match := re.search(r"listening on (\S+:\d+)", line):
                threading.Thread(target=self._proc.stderr.read, daemon=True).start()  # keep the pipe drained
                return match.group(1)
        raise RuntimeError(f"the tokenizer service did not start (exit {self._proc.wait()})")

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        self._proc.wait(timeout=30)


def stdlib_texts(max_chars: int) -> list[str]:
    """The standard library's Python sources: real English comments and docstrings, offline."""
    texts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return texts


if __name__ == "__main__":
    sys.exit(main())
