"""Host uids for run slots, leased across processes.

Each run slot executes as its own host uid, and cleanup kills by uid, so two sandboxes on one host
(the service, an engine's or RL worker's in-process executor, a test) must never hand out the
same uid. A uid is owned by whoever holds an exclusive `flock` on its lock file; the kernel drops
the lock when the owner exits, however it exits.
"""

from __future__ import annotations

import fcntl
import os
import tempfile

from .process import clear_uid


class NoFreeUids(RuntimeError):
    """Every uid in the configured span is leased by another sandbox on this host."""


class UidLease:
    """`count` uids from [first, first + span) held by this process until `close()`."""

    def __init__(self, first: int, span: int, count: int, lock_dir: str | None = None) -> None:
        self.lock_dir = lock_dir or os.path.join(tempfile.gettempdir(), "chatforge-sandbox-uids")
        os.makedirs(self.lock_dir, mode=0o700, exist_ok=True)
        self.uids: list[int] = []
        self._fds: list[int] = []
        for uid in range(first, first + span):
            if len(self.uids) == count:
                break
            fd = os.open(
                os.path.join(self.lock_dir, f"{uid}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            clear_uid(uid)  # leftovers of an owner that died mid-run
            self.uids.append(uid)
            self._fds.append(fd)
        if len(self.uids) < count:
            self.close()
            raise NoFreeUids(
                f"needed {count} run uids but only {len(self.uids)} of {first}..{first + span - 1} are free "
                f"(leased by other sandboxes on this host; see {self.lock_dir})"
            )

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self.uids.clear()
