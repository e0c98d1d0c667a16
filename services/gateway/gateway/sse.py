"""Server-sent events with a guaranteed end: the event source is always closed, whoever leaves.

Starlette's StreamingResponse stops writing when the client goes away but leaves the body
iterator to the garbage collector (with ASGI spec 2.4 it does not listen for the disconnect at all).
Generation must stop at once instead, so this response listens for `http.disconnect` itself and,
when the client leaves or the stream ends, closes the source generator: its `finally` blocks cancel
the inference requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx and ingresses: do not buffer the stream
}


def event(data: Any) -> bytes:
    """One `data:` event; strings are sent as they are (`[DONE]`), anything else as JSON."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


class SSEResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, source: AsyncGenerator[bytes, None], status_code: int = 200):
        super().__init__(content=None, status_code=status_code, headers=HEADERS)
        # Response adds content-length: 0 for an empty body; a stream has no length.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.ensure_future(self._write(send))
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({writer, listener}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, listener):
                task.cancel()
            results = await asyncio.gather(writer, listener, return_exceptions=True)
            if isinstance(results[0], Exception):
                log.error("event stream failed: %r", results[0])
            await self.source.aclose()

    async def _write(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.source:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:  # the client left while we were writing
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
