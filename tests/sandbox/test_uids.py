"""Run uids leased across processes with lock files."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from sandbox.process import clear_uid, live_pids_of
from sandbox.uids import NoFreeUids, UidLease

FIRST = 61_000  # away from the default span, so a running sandbox on this host is not disturbed


def test_leases_are_disjoint_and_released(tmp_path: Path) -> None:
    a = UidLease(FIRST, span=4, count=2, lock_dir=str(tmp_path))
    b = UidLease(FIRST, span=4, count=2, lock_dir=str(tmp_path))
    assert a.uids == [FIRST, FIRST + 1] and b.uids == [FIRST + 2, FIRST + 3]
    with pytest.raises(NoFreeUids, match="needed 1 run uids but only 0"):
        UidLease(FIRST, span=4, count=1, lock_dir=str(tmp_path))
    a.close()
    c = UidLease(FIRST, span=4, count=2, lock_dir=str(tmp_path))
    assert c.uids == [FIRST, FIRST + 1]
    b.close()
    c.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another uid needs root")
def test_a_new_lease_kills_what_a_dead_owner_left_running(tmp_path: Path) -> None:
    uid = FIRST + 10
    orphan = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[])
    try:
        deadline = time.monotonic() + 5
        while orphan.pid not in live_pids_of(uid) and time.monotonic() < deadline:
            time.sleep(0.01)
        lease = UidLease(uid, span=1, count=1, lock_dir=str(tmp_path))
        assert orphan.wait(timeout=5) == -9
        assert live_pids_of(uid) == []
        lease.close()
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_killing_by_uid_refuses_system_and_own_uids() -> None:
    for uid in (0, 1, 999, os.getuid(), 65534):
        with pytest.raises(ValueError, match="not a sandbox run uid"):
            clear_uid(uid)
