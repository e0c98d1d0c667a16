"""The sandbox service's slots and queue are filled with long runs, then more runs arrive.

What may be lost: nothing that was admitted. Past the queue a run is answered 429 `busy` with
`Retry-After` at once (no waiting behind the long runs, no hang, no 5xx); the admitted runs finish
with their output; once they are done, new runs succeed; nothing of the runs is left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.sandbox.conftest import UID_BASE, leftover_pids

from .conftest import free_port

SLOW = "import time\ntime.sleep(2)\nprint('slept')"


def test_a_full_sandbox_answers_busy_at_once_and_recovers(tmp_path):
    port = free_port()
    env = dict(os.environ, CHATFORGE_SANDBOX_UID_BASE=str(UID_BASE + 700))
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatforge.cli", "sandbox", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--max-concurrent", "2", "--max-queue", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.1)
        uids = httpx.get(url + "/info", timeout=10).json()["run_uids"]

        def run(code: str) -> tuple[int, dict, float, dict]:
            started = time.monotonic()
            r = httpx.post(url + "/v1/run", json={"code": code, "timeout_s": 20}, timeout=60)
            return r.status_code, r.json(), time.monotonic() - started, dict(r.headers)

        with ThreadPoolExecutor(3) as pool:
            admitted = [pool.submit(run, SLOW) for _ in range(3)]  # two run, one waits in the queue
            deadline = time.monotonic() + 20
            while httpx.get(url + "/info", timeout=10).json()["waiting"] < 1:
                assert time.monotonic() < deadline, "the runs were never admitted"
                time.sleep(0.05)
            refused = [run("print('late')") for _ in range(3)]
            results = [f.result() for f in admitted]

        for status, body, took, headers in refused:
            assert status == 429 and body["outcome"] == "busy", body
            assert took < 1.0, took  # refused at once, not after the long runs
            assert headers.get("retry-after") == "1"
        for status, body, _, _ in results:  # the admitted runs lost nothing
            assert status == 200 and body["outcome"] == "ok" and body["stdout"] == "slept\n", body
        after = run("print(6 * 7)")
        assert after[0] == 200 and after[1]["stdout"] == "42\n"
        assert leftover_pids(uids, include_zombies=False) == []
    finally:
        proc.terminate()
        proc.wait(30)
