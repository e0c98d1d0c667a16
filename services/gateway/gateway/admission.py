"""The generation queue: at most N generations run, at most M wait; past that, 503 at once.

A request that waits longer than the queue timeout also gets 503 (with Retry-After), so a client
never hangs on an overloaded gateway. Per process: each replica protects its own event loop and its
connection to the inference service.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import APIError


class Admission:
    def __init__(self, max_running: int, max_waiting: int, timeout_s: float):
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._semaphore = asyncio.Semaphore(max_running)
        self.running = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running >= self.max_running and self.waiting >= self.max_waiting:
            raise APIError(
                503,
                f"the gateway is at capacity ({self.running} generations running, {self.waiting} "
                "waiting): retry shortly",
                code="overloaded",
                headers={"Retry-After": "1"},
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._semaphore.acquire(), self.timeout_s)
        except TimeoutError:
            raise APIError(
                503,
                f"no generation slot freed within {self.timeout_s:g} s: retry shortly",
                code="queue_timeout",
                headers={"Retry-After": "1"},
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._semaphore.release()
