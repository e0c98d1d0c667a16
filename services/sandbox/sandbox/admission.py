"""Admission: a fixed set of run slots and a bounded queue in front of them.

A run first takes a reservation (refused at once when every slot is busy and the queue is full),
then waits for a slot. Each slot has a small integer id, which the executor turns into the host
uid its run executes as, so two runs never share a uid. Thread-safe; no I/O.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """No capacity: the run was not started. The message says why, for the caller to show."""


class SlotPool:
    def __init__(self, slots: int, max_waiting: int) -> None:
        if slots < 1 or max_waiting < 0:
            raise ValueError(f"need slots >= 1 and max_waiting >= 0, got {slots} and {max_waiting}")
        self.slots = slots
        self.max_waiting = max_waiting
        # Least recently used first: a freed slot's uid rests while its last run's processes are
        # reaped. pop() takes from the right, so slot 0 goes first.
        self._free = deque(range(slots - 1, -1, -1))
        self._reserved = 0
        self._cond = threading.Condition()

    @property
    def running(self) -> int:
        with self._cond:
            return self.slots - len(self._free)

    @property
    def waiting(self) -> int:
        with self._cond:
            return self._reserved - (self.slots - len(self._free))

    def reserve(self) -> Reservation:
        """A place in line; raises Busy when running + waiting already fill slots + max_waiting."""
        with self._cond:
            if self._reserved >= self.slots + self.max_waiting:
                raise Busy(
                    f"sandbox busy: {self.slots} runs executing and {self.max_waiting} waiting; retry later"
                )
            self._reserved += 1
        return Reservation(self)

    def _take(self, wait_s: float) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: self._free, timeout=wait_s):
                raise Busy(f"sandbox busy: no run slot freed within {wait_s:g} s; retry later")
            return self._free.pop()

    def _give_back(self, slot: int | None) -> None:
        with self._cond:
            self._reserved -= 1
            if slot is not None:
                self._free.appendleft(slot)
                self._cond.notify()


class Reservation:
    """One admitted run: `with reservation.slot(wait_s) as slot_id: ...`, or `cancel()` if unused."""

    def __init__(self, pool: SlotPool) -> None:
        self._pool = pool
        self._done = False

    @contextmanager
    def slot(self, wait_s: float) -> Iterator[int]:
        if self._done:
            raise RuntimeError("reservation already used")
        taken: int | None = None
        try:
            taken = self._pool._take(wait_s)
            yield taken
        finally:
            self._done = True
            self._pool._give_back(taken)

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            self._pool._give_back(None)
