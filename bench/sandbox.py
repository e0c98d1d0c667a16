"""Sandbox benchmark: what isolation costs against a bare `python -c` subprocess.

Same snippets, same interpreter, same run: sequential latency (p50/p99) of a bare subprocess, of the
in-process sandbox executor and of the HTTP service on 127.0.0.1, then throughput (runs/s) of each
with as many runs in flight as the host has cores. The headline is sandbox throughput over the
service as a ratio of bare-subprocess throughput.

    python bench/sandbox.py [--quick] [--runs N] [--concurrency N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "services" / "sandbox")]

import uvicorn  # noqa: E402
from sandbox.app import create_app  # noqa: E402
from sandbox.executor import SandboxExecutor  # noqa: E402
from sandbox.settings import Settings  # noqa: E402

from chatforge.sandbox_client import SandboxClient  # noqa: E402
from chatforge.tools import ToolLimits  # noqa: E402

# Typical tool calls: a calculation, some stdlib, a HumanEval-style function with its asserts.
SNIPPETS = (
    "print(sum(i * i for i in range(10_000)))",
    "import json, re\nprint(json.dumps({'words': re.findall(r'\\w+', 'the quick brown fox')}))",
    "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nassert add(-1, 1) == 0\nprint('passed')",
)
LIMITS = ToolLimits(timeout_s=10.0)
GOAL_RATIO = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (< 1 minute)")
    parser.add_argument("--runs", type=int, help="runs per measurement (default 30 quick, 200 full)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    runs = args.runs or (30 if args.quick else 200)

    settings = Settings(max_concurrent=args.concurrency, max_queue=args.concurrency * 4, queue_timeout_s=60)
    executor = SandboxExecutor(settings)
    python = executor.isolation.python
    print(f"mode={executor.isolation.mode} python={python} runs={runs} concurrency={args.concurrency}")

    def bare(code: str) -> None:
        proc = subprocess.run([python, "-c", code], capture_output=True, timeout=LIMITS.timeout_s)
        assert proc.returncode == 0, proc.stderr

    def in_process(code: str) -> None:
        result = executor.run(code, LIMITS)
        assert result.ok, result

    with _serve(settings) as url, SandboxClient(url) as client:

        def over_http(code: str) -> None:
            result = client.run(code, LIMITS)
            assert result.ok, result

        modes = {"bare subprocess": bare, "sandbox in-process": in_process, "sandbox over HTTP": over_http}
        for fn in modes.values():
            fn(SNIPPETS[0])  # warm caches (page cache, imports, connections)
        latency = {name: _latencies(fn, runs) for name, fn in modes.items()}
        throughput = {name: _throughput(fn, runs, args.concurrency) for name, fn in modes.items()}

    bare_p50 = statistics.median(latency["bare subprocess"])
    for name in modes:
        lat = latency[name]
        p50, p99 = statistics.median(lat), _percentile(lat, 0.99)
        added = f"  (+{(p50 - bare_p50) * 1e3:.1f} ms)" if name != "bare subprocess" else ""
        print(
            f"{name:20s} p50 {p50 * 1e3:6.1f} ms  p99 {p99 * 1e3:6.1f} ms{added}  {throughput[name]:6.1f} runs/s"
        )
    ratio = throughput["sandbox over HTTP"] / throughput["bare subprocess"]
    print(
        f"sandbox: {throughput['sandbox over HTTP']:.1f} runs/s ({ratio:.2f}x vs bare subprocess; goal >= {GOAL_RATIO}x)"
    )


def _latencies(fn: Callable[[str], None], runs: int) -> list[float]:
    out = []
    for i in range(runs):
        start = time.perf_counter()
        fn(SNIPPETS[i % len(SNIPPETS)])
        out.append(time.perf_counter() - start)
    return out


def _throughput(fn: Callable[[str], None], runs: int, concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(fn, (SNIPPETS[i % len(SNIPPETS)] for i in range(runs))))
    return runs / (time.perf_counter() - start)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _serve:
    """The service on 127.0.0.1 and a free port, in a background thread, for the duration."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


if __name__ == "__main__":
    main()
