"""Run slots and the bounded queue in front of them."""

from __future__ import annotations

import threading
import time

import pytest
from sandbox.admission import Busy, SlotPool


def test_slots_are_distinct_and_reused_least_recently_used_first() -> None:
    pool = SlotPool(slots=2, max_waiting=0)
    a, b = pool.reserve(), pool.reserve()
    with a.slot(0.1) as first, b.slot(0.1) as second:
        assert {first, second} == {0, 1}
        assert pool.running == 2
    c = pool.reserve()
    with c.slot(0.1) as third:
        assert third == second  # `with` releases `second` first, so it rested longer
    assert pool.running == 0 and pool.waiting == 0


def test_reserve_refuses_past_slots_plus_queue() -> None:
    pool = SlotPool(slots=1, max_waiting=2)
    held = [pool.reserve() for _ in range(3)]
    with pytest.raises(Busy, match="1 runs executing and 2 waiting"):
        pool.reserve()
    held[0].cancel()
    pool.reserve().cancel()  # room again after one left the line
    for r in held[1:]:
        r.cancel()
    assert pool.waiting == 0


def test_waiting_run_gets_the_slot_when_it_frees() -> None:
    pool = SlotPool(slots=1, max_waiting=1)
    first, second = pool.reserve(), pool.reserve()
    got: list[int] = []

    def wait_for_slot() -> None:
        with second.slot(5.0) as slot:
            got.append(slot)

    with first.slot(0.1):
        t = threading.Thread(target=wait_for_slot)
        t.start()
        time.sleep(0.05)
        assert pool.waiting == 1 and got == []
    t.join(5)
    assert got == [0]


def test_wait_gives_up_as_busy_and_releases_its_place() -> None:
    pool = SlotPool(slots=1, max_waiting=1)
    first, second = pool.reserve(), pool.reserve()
    with first.slot(0.1):
        with pytest.raises(Busy, match="no run slot freed within 0.05 s"):
            with second.slot(0.05):
                pass
        assert pool.waiting == 0
    with pytest.raises(RuntimeError):
        with second.slot(0.1):
            pass


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        SlotPool(0, 1)
