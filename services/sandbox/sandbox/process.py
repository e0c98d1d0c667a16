"""Run one launched process to its end: bounded output, a wall-clock deadline, no survivors.

Output is read as it arrives and never held beyond the cap (plus one read's worth): a run that
prints past the cap is killed at once rather than drained. At the deadline the whole process group
is killed; when the run had its own host uid, every process still owned by that uid is killed too,
so nothing a snippet started outlives its run, even if it left the process group.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .settings import NOBODY_UID

if TYPE_CHECKING:
    from .isolation import Launch

log = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 65_536
# After the main process exits, how long to keep reading pipes a leftover child may hold open.
_EXIT_DRAIN_S = 0.1
_POLL_S = 0.05
# Under bubblewrap the kernel has reaped a run within milliseconds; a weak-mode daemon's zombie
# waits for the host's init, which the next run on the slot need not wait for.
_REAP_WAIT_S = 0.5
_LAUNCHER_EXIT_S = 1.0  # how long bubblewrap's launcher gets to exit once its child is dead
MIN_RUN_UID = 1000  # below: root and system accounts


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
        start_new_session=True,  # its own process group, so one killpg reaches all of it
        pass_fds=launch.pass_fds,
        preexec_fn=launch.preexec,
    )
    stdout, stderr = bytearray(), bytearray()
    timed_out = capped = False
    try:
        timed_out, capped = _pump(proc, start + timeout_s, output_bytes, stdout, stderr)
        duration_s = time.monotonic() - start
    finally:
        stopped = timed_out or capped or not _exited(proc.pid)
        _stop_tree(proc, launch.uid)
    return RawRun(
        exit_code=None if stopped else proc.returncode,
        stdout=bytes(stdout),
        stderr=bytes(stderr),
        timed_out=timed_out,
        output_capped=capped,
        duration_s=duration_s,
    )


def _pump(
    proc: subprocess.Popen[bytes], deadline: float, cap: int, stdout: bytearray, stderr: bytearray
) -> tuple[bool, bool]:
    """Read both pipes until they close and the process exits; returns (timed_out, capped).
    The process is left unreaped, so its pid and process group stay ours until `_stop_tree`."""
    sel = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, stdout)
    sel.register(proc.stderr, selectors.EVENT_READ, stderr)
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return True, False
            if exited_at is None and _exited(proc.pid):
                exited_at = now
            if exited_at is not None and (not sel.get_map() or now - exited_at >= _EXIT_DRAIN_S):
                return False, False  # after the drain, a leftover child holding the pipes is killed
            if not sel.get_map():
                time.sleep(min(deadline - now, _POLL_S / 10))  # pipes closed; the process is exiting
                continue
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


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (WNOWAIT)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _stop_tree(proc: subprocess.Popen[bytes], uid: int | None) -> None:
    """Kill everything the run started and reap the launcher.

    With a per-run uid, the run's own processes die first and the launcher is spared: under
    bubblewrap it then reaps the sandbox's pid 1 and exits, so no zombie is left to the host's init
    (zombies count against the uid's RLIMIT_NPROC until reaped). Then the process group, while the
    unreaped launcher still holds its id; in weak mode that is the snippet's own group."""
    if uid is not None:
        clear_uid(uid, spare=proc.pid)
        try:
            proc.wait(timeout=_LAUNCHER_EXIT_S)
        except subprocess.TimeoutExpired:
            pass
    if proc.returncode is None:
        _kill_group(proc.pid)
    proc.wait()
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    if uid is not None:
        # Anything that slipped out between the two kills; and the slot is reused only once the
        # kernel has finished tearing the run down.
        clear_uid(uid, wait_s=_REAP_WAIT_S, until_reaped=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def clear_uid(uid: int, spare: int | None = None, wait_s: float = 2.0, until_reaped: bool = False) -> bool:
    """SIGKILL every running process whose real uid is `uid` (but `spare`), repeating until none is
    left (forks race us); with `until_reaped`, also wait for their zombies to be reaped, since
    zombies count against the uid's RLIMIT_NPROC. False, with a warning, if that takes over `wait_s`."""
    _check_run_uid(uid)
    deadline = time.monotonic() + wait_s
    while True:
        procs = [(pid, zombie) for pid, zombie in pids_of(uid) if pid != spare]
        running = [pid for pid, zombie in procs if not zombie]
        if not running and not (until_reaped and procs):
            return True
        if time.monotonic() > deadline:
            # Zombies alone are only slow reaping (by the host's init, for a weak-mode daemon).
            (log.warning if running else log.debug)("uid %d still has processes %s after SIGKILL", uid, procs)
            return False
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.002)


def _check_run_uid(uid: int) -> None:
    """Killing by uid is only ever meant for a run uid: never root, a system account or ourselves."""
    if uid < MIN_RUN_UID or uid in (os.getuid(), os.geteuid(), NOBODY_UID):
        raise ValueError(f"refusing to kill every process of uid {uid}: not a sandbox run uid")


def live_pids_of(uid: int) -> list[int]:
    """Processes of `uid` that are still running (not zombies)."""
    return [pid for pid, zombie in pids_of(uid) if not zombie]


def pids_of(uid: int | range) -> list[tuple[int, bool]]:
    """(pid, is_zombie) for every process whose real uid is `uid` (or in that range)."""
    uids = range(uid, uid + 1) if isinstance(uid, int) else uid
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue  # exited while we looked
        # "State:\tZ (zombie)" and "Uid:\t<real>\t<effective>..." lines; find() beats parsing all ~55.
        at = status.find(b"\nUid:\t")
        if at < 0 or int(status[at + 6 : status.index(b"\t", at + 6)]) not in uids:
            continue
        state = status.find(b"\nState:\t")
        found.append((int(name), status[state + 8 : state + 9] == b"Z"))
    return found
