"""The caps on a run as a whole (cgroups.py): a CPU quota, memory and processes over all the run's
processes, nothing left in its cgroup afterwards; and the fallback where cgroups are off.

The CPU share is measured by the snippet itself: the CPU time of its busy children (os.times, which
the kernel fills from the reaped children) over the wall time they ran. Uncapped, two busy children
on a machine with two or more cores take close to 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox.cgroups import PREFIX, RunCgroups
from sandbox.executor import SandboxExecutor
from sandbox.settings import Settings

from chatforge.tools import ToolLimits

from .conftest import UID_BASE, namespaces_executor

ROOMY = ToolLimits(timeout_s=20.0)  # generous: the shared test host can be heavily loaded
BUSY_S = 1.5
TWO_BUSY_CHILDREN = f"""
import json, os, time
kids = []
start = time.monotonic()
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + {BUSY_S}
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
t = os.times()
out = {{"cores": (t.children_user + t.children_system) / (time.monotonic() - start)}}
try:
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    out["widened"] = True
except OSError as e:
    out["widened"] = str(e)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def capped() -> Iterator[SandboxExecutor]:
    with namespaces_executor(max_concurrent=2, max_processes=16) as ex:
        if ex.cgroups is None or ex.cgroups.version is None:
            pytest.skip(
                f"no writable cgroup hierarchy here ({ex.cgroups and ex.cgroups.reason}); see the fallback test"
            )
        yield ex


def cores_used(executor: SandboxExecutor) -> dict:
    result = executor.run(TWO_BUSY_CHILDREN, ROOMY)
    assert result.outcome == "ok", result
    return json.loads(result.stdout)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: any run takes at most one anyway")
def test_two_busy_processes_get_one_core_in_the_run_cgroup(capped: SandboxExecutor) -> None:
    assert {f"cgroup-{capped.cgroups.version}-{c}" for c in ("cpu", "memory", "pids")} <= set(  # type: ignore[union-attr]
        capped.isolation.layers()
    )
    out = cores_used(capped)
    assert out["cores"] <= 1.1, out  # cpu_quota_cores=1: 100 ms of CPU per 100 ms period
    assert out["cores"] >= 0.1, out  # and it did run (a loaded host may give it little)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: any run takes at most one anyway")
def test_without_cgroups_a_run_is_pinned_to_one_core_it_cannot_widen() -> None:
    with namespaces_executor(max_concurrent=2, cgroups="off") as ex:
        assert "cpu-pinning" in ex.isolation.layers()
        out = cores_used(ex)
    assert out["cores"] <= 1.1, out
    assert "Operation not permitted" in str(out["widened"]), out  # seccomp refuses sched_setaffinity


def test_memory_hungry_children_are_capped_as_a_whole(capped: SandboxExecutor) -> None:
    # Six children of 120 MB each: every one is under the per-process address-space limit (256 MB),
    # together they are 720 MB, far past the run's cap (256 MB + its two 32 MB tmpfs).
    code = textwrap.dedent(
        """
        import os
        kids = []
        for _ in range(6):
            pid = os.fork()
            if pid == 0:
                block = bytearray(120 * 1024 * 1024)
                for i in range(0, len(block), 4096):
                    block[i] = 1  # touch every page: resident, not just reserved
                os._exit(0)
            kids.append(pid)
        print(sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in kids))
        """
    )
    result = capped.run(code, ToolLimits(timeout_s=20.0, memory_mb=256))
    assert result.outcome == "memory", result
    assert "together passed its memory limit (256 MB" in result.message
    statuses = json.loads(result.stdout)
    assert -signal.SIGKILL in statuses, statuses  # the kernel killed children, not the run's parent
    assert capped.run("print('next')", ROOMY).stdout == "next\n"  # the slot is clean for the next run


def test_a_fork_bomb_is_held_at_the_process_cap_and_leaves_nothing(capped: SandboxExecutor) -> None:
    code = textwrap.dedent(
        """
        import os, time
        n = 0
        while True:
            try:
                if os.fork() == 0:
                    time.sleep(60)
                    os._exit(0)
                n += 1
            except OSError:
                break
        print(n, flush=True)
        time.sleep(60)
        """
    )
    started = time.monotonic()
    result = capped.run(code, ToolLimits(timeout_s=2.0))
    assert result.outcome == "timeout", result
    assert time.monotonic() - started < 6.0
    assert 0 < int(result.stdout) < capped.settings.max_processes  # 16: the snippet and bubblewrap count too
    cgroups = capped.cgroups
    assert cgroups is not None
    assert all(p.pids() == [] for p in cgroups.placements)  # type: ignore[attr-defined]


def test_a_dead_executors_cgroups_and_runs_are_reaped_by_the_next() -> None:
    """Weak mode (no pid namespace to die with): a sandbox SIGKILLed mid-run leaves its snippet
    running; the next executor on the host kills it and removes the dead one's cgroups."""
    script = textwrap.dedent(
        f"""
        import sys
        from sandbox.executor import SandboxExecutor
        from sandbox.settings import Settings
        from chatforge.tools import ToolLimits
        ex = SandboxExecutor(Settings(mode="weak", max_concurrent=1, uid_base={UID_BASE + 500}))
        print(ex.cgroups.version, flush=True)
        ex.run("import os, time\\nprint(os.getpid(), flush=True)\\ntime.sleep(120)", ToolLimits(timeout_s=60))
        """
    )
    dead = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert dead.stdout is not None
        if dead.stdout.readline().strip() == "None":
            pytest.skip("no writable cgroup hierarchy here")
        snippet = _wait_for_child_running_python(dead.pid)
        dead.kill()
        dead.wait()
        assert _running(snippet), "the orphaned snippet should still run before the next executor starts"
        bases = _cgroup_dirs(dead.pid)
        assert bases
        with SandboxExecutor(Settings(mode="weak", max_concurrent=1, uid_base=UID_BASE + 600)):
            deadline = time.monotonic() + 5
            while _running(snippet) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _running(snippet)
            assert not any(b.exists() for b in bases)
    finally:
        dead.kill()
        dead.wait()


def test_cgroups_off_and_an_unwritable_host_fall_back_to_pinning() -> None:
    off = RunCgroups.create(3, 1.0, enabled=False)
    assert off.version is None and off.layers == ("cpu-pinning",) and "off" in off.reason
    cores = [p.cores for p in off.placements]  # type: ignore[attr-defined]
    assert all(len(c) == 1 for c in cores)
    assert len({min(c) for c in cores}) == min(3, len(os.sched_getaffinity(0)))  # spread over the cores


# --- helpers -------------------------------------------------------------------------------------
def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            out.append(int(child))
            frontier.append(int(child))
    return out


def _wait_for_child_running_python(pid: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in _descendants(pid):
            try:
                if "main.py" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                    return child
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError("the snippet never started")


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def _cgroup_dirs(owner: int) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"**/{PREFIX}{owner}-*") if p.is_dir()]
