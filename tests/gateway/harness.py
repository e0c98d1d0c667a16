"""A real gateway on 127.0.0.1 (uvicorn, port 0) in a thread with its own event loop.

The parts that hold asyncio state (the tokenizer codec's channel, the engine) are built inside that
loop by `build(settings)`; everything else is the production code path (`build_state`, `create_app`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from gateway.app import build_state, create_app
from gateway.settings import Settings
from gateway.state import GatewayState

Parts = tuple[Any, Any, Any]  # codec, inference, job backend
Builder = Callable[[Settings], Awaitable[Parts]]


class RunningGateway:
    def __init__(self, settings: Settings, build: Builder, redis: Any):
        self.settings = settings
        self._build = build
        self._redis = redis
        self.state: GatewayState | None = None
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gateway-under-test", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> RunningGateway:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self._server is not None and self._server.started):
            if self._error is not None:
                raise RuntimeError(f"gateway failed to start: {self._error!r}") from self._error
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("gateway did not start in time")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(30)

    def call(self, coroutine_fn: Callable[[], Awaitable[Any]], timeout_s: float = 30.0) -> Any:
        """Run a coroutine on the gateway's loop (to reach its parts) and wait for the result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine_fn(), self._loop).result(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start()
            self._error = e

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        codec, inference, backend = await self._build(self.settings)
        self.state = build_state(
            self.settings, codec=codec, inference=inference, backend=backend, redis=self._redis
        )
        app = create_app(self.state)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        await self._server.serve()
