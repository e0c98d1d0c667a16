"""A job under `python -m chatforge.jobrun` lives and dies as one session, and `spawn_owned` children
die with their owner, not with the thread that started them. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import redis

from chatforge.lifetime import ProcessRef, session_members, spawn_owned
from chatforge.redisconn import EmbeddedRedis

# A job that leaves a grandchild in a process group of its own (as Ray's workers are), then works.
JOB = textwrap.dedent(
    """
    import os, subprocess, sys, time
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], process_group=0)
    print(os.getpid(), stray.pid, flush=True)
    time.sleep(float(sys.argv[1]))
    """
)


@pytest.fixture
def redis_url_for_jobrun(tmp_path):  # type: ignore[no-untyped-def]
    server = EmbeddedRedis.start(tmp_path / "redis")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield server.url, client
    client.close()
    server.stop()


def run_job(seconds: float, *extra: str, parent: list[str] | None = None) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "chatforge.jobrun", *extra, "--", sys.executable, "-c", JOB, str(seconds)]
    if parent is not None:  # start the wrapper under an intermediate process we can kill
        argv = [*parent, *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def pids(proc: subprocess.Popen[str]) -> list[int]:
    assert proc.stdout is not None
    return [int(x) for x in proc.stdout.readline().split()]


def wait_gone(pid_list: list[int], timeout_s: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    refs = [r for r in (ProcessRef.of(p) for p in pid_list) if r is not None]
    while time.monotonic() < deadline:
        alive = [r.pid for r in refs if r.running()]
        if not alive:
            return []
        time.sleep(0.05)
    return [r.pid for r in refs if r.running()]


def test_the_commands_exit_ends_what_it_left_and_keeps_its_status():
    proc = run_job(0.2)
    job, stray = pids(proc)
    assert proc.wait(30) == 0
    assert wait_gone([job, stray]) == []


def test_the_parents_death_ends_the_whole_session():
    # The wrapper's parent is a shell that waits for it; SIGKILL of the shell is Ray's supervisor
    # (or the gateway above it) dying.
    proc = run_job(120, parent=["sh", "-c", 'exec "$@" & wait', "sh"])
    job, stray = pids(proc)
    wrapper = os.getsid(job)
    assert os.getsid(stray) == wrapper == os.getpgid(wrapper)  # the job's own session
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_gone([wrapper, job, stray]) == []


def test_sigterm_stops_the_session_and_reports_the_signal(redis_url_for_jobrun):
    url, client = redis_url_for_jobrun
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatforge.jobrun", "--job-id", "job-x", "--grace-s", "2", "--",
         sys.executable, "-c", JOB, "120"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "REDIS_URL": url},
    )  # fmt: skip
    job, stray = pids(proc)
    recorded = ProcessRef.from_dict(json.loads(client.get("chatforge:job:job-x:process")))
    assert recorded.pid == proc.pid and recorded.running() and set(session_members(proc.pid)) >= {job, stray}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert wait_gone([job, stray]) == []


def test_spawn_owned_outlives_the_thread_that_asked_but_not_its_owner():
    code = textwrap.dedent(
        """
        import sys, threading, time
        from chatforge.lifetime import spawn_owned
        box = []
        t = threading.Thread(target=lambda: box.append(spawn_owned([sys.executable, "-c", "import time; time.sleep(120)"])))
        t.start(); t.join()
        time.sleep(0.5)  # the asking thread is gone: the child must still run
        print(box[0].pid, box[0].poll() is None, flush=True)
        time.sleep(120)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child, alive = owner.stdout.readline().split()
    assert alive == "True"
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert wait_gone([int(child)]) == []


def test_spawn_owned_puts_the_child_in_its_own_session():
    child = spawn_owned([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert os.getsid(child.pid) == child.pid
    finally:
        child.kill()
        threading.Event().wait(0.1)
