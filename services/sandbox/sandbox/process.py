"""Run one launched process to its end: bounded output, a wall-clock deadline, no survivors.

Output is read as it arrives and never held beyond the cap (plus one read's worth): a run that
prints past the cap is killed at once rather than drained. At the deadline the whole process group
is killed; when the run had its own host uid, every process still owned by that uid is killed too,
so nothing a snippet started outlives its run, even if it left the process group.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .isolation import Launch

_READ_CHUNK_BYTES = 65_536
# After the main process exits, how long to keep reading pipes a leftover child may hold open.
_EXIT_DRAIN_S = 0.1
_POLL_S = 0.05


@dataclass(frozen=True)
class RawRun:
    exit_code: int | None  # None when it had to be killed; bubblewrap reports a signal n as 128 + n
    stdout: bytes
    stderr: bytes
    timed_out: bool
    output_capped: bool
    duration_s: float


def run_capped(launch: Launch, timeout_s: float, output_bytes: int) -> RawRun:
    """Start `launch`, collect at most `output_bytes` of stdout and of stderr, stop at `timeout_s`."""
    start = time.monotonic()
    proc = subprocess.Popen(
        launch.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=launch.env,
        cwd=launch.cwd,
        user=launch.uid,
        group=launch.uid,
        extra_groups=[] if launch.uid is not None else None,
        start_new_session=True,  # its own process group, so one killpg reaches all of it
        pass_fds=launch.pass_fds,
        preexec_fn=launch.preexec,
    )
    stdout, stderr = bytearray(), bytearray()
    timed_out = capped = False
    try:
        timed_out, capped = _pump(proc, start + timeout_s, output_bytes, stdout, stderr)
    finally:
        stopped = timed_out or capped or proc.poll() is None
        _kill_group(proc.pid)  # before reaping the leader, so the group id cannot have been reused
        if launch.uid is not None:
            kill_uid(launch.uid)
        exit_code = proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    return RawRun(
        exit_code=None if stopped else exit_code,
        stdout=bytes(stdout),
        stderr=bytes(stderr),
        timed_out=timed_out,
        output_capped=capped,
        duration_s=time.monotonic() - start,
    )


def _pump(
    proc: subprocess.Popen[bytes], deadline: float, cap: int, stdout: bytearray, stderr: bytearray
) -> tuple[bool, bool]:
    """Read both pipes until they close and the process exits; returns (timed_out, capped)."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, stdout)
    sel.register(proc.stderr, selectors.EVENT_READ, stderr)
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return True, False
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at >= _EXIT_DRAIN_S:
                return False, False  # a leftover child holds the pipes; it is killed next
            for key, _ in sel.select(timeout=min(deadline - now, _POLL_S)):
                chunk = os.read(key.fd, _READ_CHUNK_BYTES)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf: bytearray = key.data
                room = cap - len(buf)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    return False, True
    finally:
        sel.close()
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        return True, False
    return False, False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_uid(uid: int, rounds: int = 100) -> None:
    """SIGKILL every live process whose real uid is `uid`, until none is left (forks race us)."""
    for _ in range(rounds):
        pids = live_pids_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)
    raise RuntimeError(f"processes of uid {uid} survive SIGKILL: {live_pids_of(uid)}")


def live_pids_of(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue  # exited while we looked
        fields = dict(line.split(b":", 1) for line in status.splitlines() if b":" in line)
        if int(fields.get(b"Uid", b"-1 ").split()[0]) == uid and not fields.get(
            b"State", b""
        ).strip().startswith(b"Z"):
            pids.append(int(name))
    return pids
