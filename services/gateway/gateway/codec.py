"""Text <-> token ids for the gateway: render a chat for completion, turn streamed ids into text.

Two implementations of one `TextCodec` protocol:
- `GrpcCodec`: the tokenizer service over gRPC (asyncio channel); the cluster path, and the only one
  the gateway image can run (it carries no tokenizer files of its own);
- `LocalCodec`: the tokenizer loaded in this process; the one-machine path.
Both render through `chatforge.chat` (the service runs the same renderer), so ids are identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from chatforge.chat import render_for_completion
from chatforge.detokenize import StreamDecoder
from chatforge.tokenizer import Tokenizer
from chatforge.tokenizer_client import AsyncDecodeSession, AsyncTokenizerClient, TokenizerServiceError
from gateway.errors import APIError

T = TypeVar("T")


class CodecUnavailable(RuntimeError):
    """The tokenizer cannot be reached; the gateway answers 503."""


class IdDecoder(Protocol):
    """Incremental decoding of one stream: never splits a character across deltas."""

    async def feed(self, ids: Sequence[int]) -> str: ...

    async def close(self) -> str: ...


class TextCodec(Protocol):
    name: str
    special_ids: dict[str, int]

    async def render_for_completion(self, messages: list[dict[str, Any]], max_tokens: int) -> list[int]:
        """Ids ending in `<|assistant_start|>`; ConversationTooLong past `max_tokens`."""
        ...

    def decoder(self) -> IdDecoder: ...

    async def check(self) -> None:
        """Raise CodecUnavailable when the tokenizer cannot answer."""
        ...

    async def close(self) -> None: ...


# --- in process ----------------------------------------------------------------------------------


class LocalCodec:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.name = tokenizer.name
        self.special_ids = dict(tokenizer.special_ids)

    async def render_for_completion(self, messages: list[dict[str, Any]], max_tokens: int) -> list[int]:
        return render_for_completion(self.tokenizer, messages, max_tokens=max_tokens)

    def decoder(self) -> IdDecoder:
        return _LocalDecoder(StreamDecoder(self.tokenizer))

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _LocalDecoder:
    def __init__(self, decoder: StreamDecoder):
        self._decoder = decoder

    async def feed(self, ids: Sequence[int]) -> str:
        return self._decoder.feed_many(list(ids))

    async def close(self) -> str:
        return self._decoder.flush()


# --- the tokenizer service ---------------------------------------------------------------------


class GrpcCodec:
    """The tokenizer service through the shared client (`chatforge.tokenizer_client`); `connect`
    fetches its special tokens once (they never change on reload)."""

    def __init__(self, target: str, *, timeout_s: float = 10.0):
        self.target = target
        self.client = AsyncTokenizerClient(target, timeout_s=timeout_s)
        self.name = ""
        self.special_ids: dict[str, int] = {}

    async def connect(self) -> GrpcCodec:
        info = await self._guard(self.client.info())
        self.name = info.name
        self.special_ids = dict(info.special_tokens)
        return self

    async def render_for_completion(self, messages: list[dict[str, Any]], max_tokens: int) -> list[int]:
        # Validated by the client too (it parses the conversation), so a bad conversation is a 400,
        # not a round trip; the server's length check raises ConversationTooLong with its numbers.
        return await self._guard(self.client.render_for_completion(messages, max_tokens=max_tokens))

    def decoder(self) -> IdDecoder:
        return _GrpcDecoder(self.client.decode_session())

    async def check(self) -> None:
        await self._guard(self.client.info())

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    async def _guard(call: Awaitable[T]) -> T:
        try:
            return await call
        except TokenizerServiceError as e:
            raise _unavailable_or_bad(e) from None


class _GrpcDecoder:
    """An `IdDecoder` over one DecodeStream session, its errors as the gateway's."""

    def __init__(self, session: AsyncDecodeSession):
        self._session = session

    async def feed(self, ids: Sequence[int]) -> str:
        try:
            return await self._session.feed(ids)
        except TokenizerServiceError as e:
            raise _unavailable_or_bad(e) from None

    async def close(self) -> str:
        try:
            return await self._session.close()
        except TokenizerServiceError as e:
            raise _unavailable_or_bad(e) from None


def _unavailable_or_bad(e: TokenizerServiceError) -> Exception:
    if e.code == "INVALID_ARGUMENT":
        return APIError(400, f"tokenizer refused the input: {e.details}", code="invalid_input")
    return CodecUnavailable(f"tokenizer service: {e.code}: {e.details}")


async def connect_grpc(target: str, *, timeout_s: float = 10.0, wait_s: float = 0.0) -> GrpcCodec:
    """A GrpcCodec that has read the service's info; retries for `wait_s` while it starts."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        codec = GrpcCodec(target, timeout_s=timeout_s)
        try:
            return await codec.connect()
        except CodecUnavailable:
            await codec.close()
            if asyncio.get_running_loop().time() >= deadline:
                raise
            await asyncio.sleep(0.5)
