"""Each isolation layer on its own, through the in-process executor (namespaces mode)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sandbox.executor import SandboxExecutor
from sandbox.isolation import SANDBOX_UID
from sandbox.process import live_pids_of

from chatforge.tools import ToolLimits
from tests.capabilities import why_not

from .conftest import leftover_pids, namespaces_executor

MIB = 1024 * 1024
ROOMY = ToolLimits(timeout_s=15.0)  # generous: the shared test host can be heavily loaded


@pytest.fixture(scope="module")
def small() -> Iterator[SandboxExecutor]:
    with namespaces_executor(
        max_concurrent=2, max_file_bytes=1 * MIB, max_open_files=32, max_processes=16, tmpfs_bytes=4 * MIB
    ) as ex:
        yield ex


def run_json(executor: SandboxExecutor, code: str, limits: ToolLimits = ROOMY) -> dict:
    result = executor.run(code + "\nimport json as _j\nprint(_j.dumps(out))", limits)
    assert result.outcome == "ok", result
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_runs_as_nobody_without_capabilities(small: SandboxExecutor) -> None:
    out = run_json(
        small,
        """
import os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
out = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "cap": status["CapEff"].strip(),
       "nnp": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
       "oom": open("/proc/self/oom_score_adj").read().strip()}
""",
    )
    assert out == {
        "uid": SANDBOX_UID,
        "euid": SANDBOX_UID,
        "gid": SANDBOX_UID,
        "cap": "0" * 16,
        "nnp": "1",
        "seccomp": "2",
        "oom": "1000",
    }


def test_each_slot_runs_as_its_own_host_uid(small: SandboxExecutor) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"per-run host uids need the service to run as root: {why_not('root')}")
    assert small.isolation.per_run_uid
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(small.run, "import time; time.sleep(1.5)", ROOMY)
        seen: set[int] = set()
        while not running.done() and not seen:
            seen = {uid for uid in small.run_uids if live_pids_of(uid)}
            time.sleep(0.02)
        assert running.result().outcome == "ok"
    assert len(seen) == 1, "the run's processes are not owned by a slot uid on the host"


def test_network_namespace_has_only_its_own_loopback(small: SandboxExecutor) -> None:
    # /proc/net/dev lists the interfaces of the reader's network namespace.
    out = run_json(small, "out = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]")
    assert out == ["lo"]


def test_pid_namespace_shows_only_the_run(small: SandboxExecutor) -> None:
    out = run_json(small, "import os\nout = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())")
    assert out == [1]  # the snippet is its namespace's init


def test_filesystem_is_private_and_read_only(small: SandboxExecutor) -> None:
    out = run_json(
        small,
        """
import os
out = {"root": sorted(os.listdir("/")), "cwd": os.getcwd(), "writable": {}}
for path in ("/", "/usr", "/sandbox", "/tmp", "/dev/shm"):
    out["writable"][path] = os.access(path, os.W_OK) and os.path.isdir(path)
try:
    open("/usr/lib/x", "w")
    out["usr_write"] = "ok"
except OSError as e:
    out["usr_write"] = e.errno
""",
    )
    assert set(out["root"]) <= {
        "usr",
        "bin",
        "sbin",
        "lib",
        "lib32",
        "lib64",
        "proc",
        "dev",
        "tmp",
        "sandbox",
    }
    assert out["cwd"] == "/tmp"
    assert out["writable"]["/tmp"] and not out["writable"]["/"] and not out["writable"]["/usr"]
    assert out["usr_write"] in (13, 30)  # EACCES or EROFS


def test_tmp_is_size_capped_and_fresh_each_run(small: SandboxExecutor) -> None:
    code = """
import os
out = {"before": os.listdir("/tmp")}
try:
    for i in range(8):
        with open(f"/tmp/f{i}", "wb") as f:
            f.write(b"x" * (1024 * 1024 - 1))
    out["filled"] = "all"
except OSError as e:
    out["filled"] = e.errno
"""
    first = run_json(small, code)
    assert first["before"] == []
    assert first["filled"] == 28  # ENOSPC: the 4 MiB tmpfs is full
    assert run_json(small, code)["before"] == []
    shm = run_json(small, code.replace("/tmp", "/dev/shm"))
    assert shm["before"] == [] and shm["filled"] == 28


def test_dev_is_read_only(small: SandboxExecutor) -> None:
    out = run_json(
        small,
        """
out = {}
for path in ("/dev/x", "/dev/pts/x"):
    try:
        open(path, "w").write("x")
        out[path] = "wrote"
    except OSError as e:
        out[path] = e.errno
import multiprocessing
lock = multiprocessing.Lock()  # a POSIX semaphore in /dev/shm
out["sem"] = lock.acquire(timeout=1)
""",
    )
    assert out["/dev/x"] in (13, 30) and out["/dev/pts/x"] in (13, 30) and out["sem"] is True


def test_rlimits_are_set(small: SandboxExecutor) -> None:
    out = run_json(
        small,
        """
import resource as r
out = {n: r.getrlimit(getattr(r, n)) for n in ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_NPROC")}
""",
        ToolLimits(timeout_s=15.0, memory_mb=200),
    )
    assert out["RLIMIT_CPU"] == [16, 16]
    assert out["RLIMIT_AS"] == [200 * MIB] * 2
    assert out["RLIMIT_FSIZE"] == [MIB] * 2
    assert out["RLIMIT_NOFILE"] == [32, 32]
    assert out["RLIMIT_CORE"] == [0, 0]
    if os.geteuid() == 0:
        assert out["RLIMIT_NPROC"] == [16, 16]


def test_file_size_and_open_file_limits_bite(small: SandboxExecutor) -> None:
    out = run_json(
        small,
        """
out = {}
try:
    open("/tmp/big", "wb").write(b"x" * (2 * 1024 * 1024))
    out["big"] = "ok"
except OSError as e:
    out["big"] = e.errno
files = []
try:
    for i in range(100):
        files.append(open(f"/tmp/n{i}", "w"))
except OSError as e:
    out["files"] = [len(files), e.errno]
for f in files:
    f.close()
""",
    )
    assert out["big"] == 27  # EFBIG (Python ignores SIGXFSZ)
    assert out["files"][1] == 24 and out["files"][0] < 32  # EMFILE


def test_process_limit_bites(small: SandboxExecutor) -> None:
    if os.geteuid() != 0:
        pytest.skip("RLIMIT_NPROC is only set when each run has its own host uid (service as root)")
    out = run_json(
        small,
        """
import os, time
n, err = 0, None
while n < 100:
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    n += 1
out = [n, err]
""",
    )
    assert out[1] == 11 and out[0] < 16  # EAGAIN below max_processes


def test_timeout_kills_the_whole_tree(small: SandboxExecutor) -> None:
    code = """
import os, signal, subprocess, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen(["sleep", "100"], start_new_session=True)
if os.fork() == 0:
    while True:
        pass
print("started", flush=True)
time.sleep(100)
"""
    result = small.run(code, ToolLimits(timeout_s=3.0))
    assert result.outcome == "timeout" and result.exit_code is None
    assert result.stdout == "started\n", "output printed before the kill is kept"
    assert leftover_pids(small.run_uids) == []
