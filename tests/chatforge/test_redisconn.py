"""The embedded Redis lives exactly as long as its owner: stopped at a clean exit, gone (after saving)
when the owner is SIGKILLed, reused while its owner lives, and stopped by the next start when it
outlived its owner. Each owner is a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import redis

from chatforge.lifetime import ProcessRef

OWNER = textwrap.dedent(
    """
    import sys, time
    from chatforge import redisconn
    url = redisconn.start_embedded(sys.argv[1])
    previous = redisconn.connect().getset("key", sys.argv[2])
    print(url, previous, flush=True)
    if sys.argv[3] == "stay":
        time.sleep(120)
    """
)


def owner(directory: Path, value: str, stay: bool) -> tuple[subprocess.Popen[str], str]:
    """A process that starts (or reuses) the embedded server and sets `key`; returns it and the URL
    (`previous` holds what `key` was before)."""
    global previous
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(directory), value, "stay" if stay else "exit"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url, previous = proc.stdout.readline().split()
    return proc, url


previous = ""


def server_of(directory: Path) -> ProcessRef:
    return ProcessRef.from_dict(json.loads((directory / "server.json").read_text())["server"])


def wait_gone(ref: ProcessRef, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while ref.running():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_clean_exit_stops_the_server(tmp_path):
    proc, url = owner(tmp_path, "a", stay=False)
    proc.wait(30)
    assert url.startswith("unix://") and not Path(url[7:]).exists()
    assert not (tmp_path / "server.json").exists()


def test_sigkill_of_the_owner_takes_the_server_along_and_nothing_is_lost(tmp_path):
    proc, _ = owner(tmp_path, "before-the-kill", stay=True)
    server = server_of(tmp_path)
    assert server.running()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_gone(server)  # the parent-death signal: SIGTERM, on which Redis saves and exits
    again, url = owner(tmp_path, "after", stay=True)  # a new owner starts a new server on the dump
    try:
        assert server_of(tmp_path).pid != server.pid
        assert previous == "before-the-kill"  # saved when its owner died
    finally:
        again.kill()
        again.wait()
    assert wait_gone(server_of(tmp_path))


def test_a_live_owners_server_is_reused_and_an_orphan_is_stopped(tmp_path):
    first, url = owner(tmp_path, "first", stay=True)
    server = server_of(tmp_path)
    second, second_url = owner(tmp_path, "second", stay=False)  # reuses: the first owner lives
    second.wait(30)
    assert second_url == url and server.running()  # the reusing process did not stop it
    assert redis.Redis.from_url(url, decode_responses=True).get("key") == "second"

    # An orphan: a server whose recorded owner is gone (say, killed before it could tie its server
    # to itself). The next start must stop it, not serve from it forever.
    state = json.loads((tmp_path / "server.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_ref = ProcessRef.of(dead.pid)
    dead.wait()
    assert dead_ref is not None
    state["owner"] = dead_ref.to_dict()
    (tmp_path / "server.json").write_text(json.dumps(state))
    third, third_url = owner(tmp_path, "third", stay=False)
    third.wait(30)
    assert not server.running()  # stopped (it saved first)
    assert third_url == url
    first.kill()
    first.wait()
