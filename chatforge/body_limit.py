"""Request bodies bounded before any work: the ASGI middleware the HTTP services wrap their apps in.

A body over `max_bytes` is answered 413 before the app has it: at once when `Content-Length` says
so (the app never runs), and for a chunked body as soon as the bytes received pass the limit, while
the app is still reading (it never sees the rest). Either way the service holds at most `max_bytes`
of one request, whatever the client sends; the server discards what is still on the wire without
keeping it. Pure ASGI with no framework import, so the gateway and the sandbox share it, each with
its own error body (`error_body(message) -> dict`, sent as JSON).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised into the app by `receive` once a chunked body passes the limit (the 413 is already out)."""


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 before the app reads them."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, error_body: Callable[[str], dict[str, Any]]):
        self.app = app
        self.max_bytes = max_bytes
        self.error_body = error_body

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = content_length(scope)
        if length is not None and length > self.max_bytes:
            message = f"request body is {length} bytes, over the limit of {self.max_bytes} bytes"
            await send_json(send, 413, self.error_body(message))
            return
        received = 0
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        text = f"request body passed the limit of {self.max_bytes} bytes"
                        await send_json(send, 413, self.error_body(text))
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:  # the 413 is out: whatever the app answers to its failed read goes nowhere
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not refused:
                raise


def content_length(scope: MutableMapping[str, Any]) -> int | None:
    """The request's Content-Length, or None (chunked, absent or unreadable)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """A whole JSON response through the raw ASGI `send`."""
    data = json.dumps(body, separators=(",", ":")).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data, "more_body": False})
