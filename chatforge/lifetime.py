"""Processes that do not outlive their owner: parent-death signals, sessions, and telling a live
process from a dead one (or from a stranger that reused its pid).

On one machine the gateway starts long-lived helpers (the embedded Redis server, a local Ray head)
and jobs. Each must end when its owner ends, however the owner ends (docs/architecture.md, "Nothing
orphaned"):

- `spawn_owned` starts a helper in its own session (terminal signals do not reach it; one
  `kill_session` reaches everything it starts) under a parent-death signal: the kernel signals it
  when its owner dies, SIGKILL included. Linux ties that signal to the *thread* that forked, so the
  fork happens on a thread that lives as long as the child, not on whichever worker thread asked.
- `ProcessRef` names a process by pid, start time and boot, so a record written by one gateway
  (in Redis, in a state file) lets the next one find what the first left behind, and never kill an
  unrelated process that got the same pid.
- `kill_session` ends a session: every process in it, the ones that moved to their own process
  group (Ray's workers do) included.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec function: the child gets `sig` when the thread that forked it exits."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")

    return preexec


def set_parent_death_signal(sig: int) -> bool:
    """Ask for `sig` when this process's parent dies; False when the parent is already gone."""
    parent = os.getppid()
    die_with_parent(sig)()
    return os.getppid() == parent  # the parent may have died before the prctl took effect


def spawn_owned(
    argv: Sequence[str], *, death_signal: int = signal.SIGTERM, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, signalled with `death_signal` when this process dies.

    The fork runs on a daemon thread that then waits for the child, so the parent-death signal
    (tied to the forking thread) fires only when this process ends or the child has exited.
    """
    started: list[subprocess.Popen[bytes] | BaseException] = []
    ready = threading.Event()

    def keeper() -> None:
        try:
            child = subprocess.Popen(
                _with_death_signal(argv, death_signal),
                start_new_session=True,
                **_death_signal_preexec(death_signal),
                **popen,
            )
        except BaseException as e:  # reported to the caller below
            started.append(e)
            ready.set()
            return
        started.append(child)
        ready.set()
        child.wait()

    threading.Thread(target=keeper, name=f"owner-of-{Path(argv[0]).name}", daemon=True).start()
    ready.wait()
    result = started[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _with_death_signal(argv: Sequence[str], sig: int) -> list[str]:
    """`argv` under util-linux's `setpriv --pdeathsig`, which sets the signal and then execs it.

    No Python runs in the child between fork and exec: a preexec function there can crash or
    deadlock in a threaded process (seen: the embedded Redis "exited with status -11 at start"
    now and then under a threaded gateway). Without setpriv, the preexec function is the fallback.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return list(argv)
    return [setpriv, "--pdeathsig", signal.Signals(sig).name.removeprefix("SIG"), "--", *argv]


def _death_signal_preexec(sig: int) -> dict[str, Any]:
    return {} if shutil.which("setpriv") else {"preexec_fn": die_with_parent(sig)}


@dataclass(frozen=True)
class ProcessRef:
    """A process as other processes can check it later: pid, start time (clock ticks after boot),
    the boot it belongs to and the host."""

    pid: int
    start_ticks: int
    boot_id: str
    host: str

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The reference of a running process on this host, None when there is none."""
        ticks = _start_ticks(pid)
        return None if ticks is None else cls(pid, ticks, boot_id(), socket.gethostname())

    @classmethod
    def current(cls) -> ProcessRef:
        ref = cls.of(os.getpid())
        assert ref is not None
        return ref

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRef:
        return cls(int(data["pid"]), int(data["start_ticks"]), str(data["boot_id"]), str(data["host"]))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def here(self) -> bool:
        """Whether it belongs to this host's current boot (else nothing here can be checked or killed)."""
        return self.host == socket.gethostname() and self.boot_id == boot_id()

    def running(self) -> bool:
        """Still running here: same boot, same pid, same start time (not a reused pid), not a zombie."""
        return self.here and _start_ticks(self.pid) == self.start_ticks and not _zombie(self.pid)


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:  # not Linux: the host name alone has to do
        return ""


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid` (/proc), zombies left out."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None and int(stat[3]) == sid and stat[0] != "Z":
            out.append(int(entry))
    return out


def kill_session(sid: int, *, grace_s: float = 5.0, spare: int | None = None) -> bool:
    """SIGTERM every process of session `sid` (but `spare`), then SIGKILL what is left after
    `grace_s`; True once none is left (it waits up to 5 s more for SIGKILL to land)."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        members = [p for p in session_members(sid) if p != spare]
        if not members:
            return True
        for pid in members:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not [p for p in session_members(sid) if p != spare]:
                return True
            time.sleep(0.05)
    return not [p for p in session_members(sid) if p != spare]


# --- helpers -------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    stat = _stat(pid)
    return int(stat[19]) if stat is not None else None  # field 22 of the whole line: starttime


def _zombie(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"
