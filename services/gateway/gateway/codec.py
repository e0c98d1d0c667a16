"""Text <-> token ids for the gateway: render a chat for completion, turn streamed ids into text.

Two implementations of one `TextCodec` protocol:
- `GrpcCodec`: the tokenizer service over gRPC (asyncio channel); the cluster path, and the only one
  the gateway image can run (it carries no tokenizer files of its own);
- `LocalCodec`: the tokenizer loaded in this process; the one-machine path.
Both render through `chatforge.chat` (the service runs the same renderer), so ids are identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

import grpc

from chatforge.chat import ConversationTooLong, render_for_completion
from chatforge.contracts.errors import ErrorKind, from_grpc_metadata
from chatforge.detokenize import StreamDecoder
from chatforge.tokenizer import Tokenizer
from chatforge.tokenizer_client import conversation_to_proto
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from gateway.errors import APIError


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
    """The tokenizer service; `connect` fetches its special tokens once (they never change on reload)."""

    def __init__(self, target: str, *, timeout_s: float = 10.0):
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.TokenizerServiceStub(self._channel)
        self.name = ""
        self.special_ids: dict[str, int] = {}

    async def connect(self) -> GrpcCodec:
        info = await self._call(self._stub.Info, pb.InfoRequest())
        self.name = info.name
        self.special_ids = {s.token: s.id for s in info.special_tokens}
        return self

    async def render_for_completion(self, messages: list[dict[str, Any]], max_tokens: int) -> list[int]:
        # Validated here too (conversation_to_proto parses), so a bad conversation is a 400, not a
        # round trip; the server's length check is then the only one that can fail.
        request = pb.RenderConversationRequest(
            conversation=conversation_to_proto(messages), for_completion=True, max_tokens=max_tokens
        )
        try:
            response = await self._stub.RenderConversation(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            detail = from_grpc_metadata(e.trailing_metadata())
            if detail is not None and detail.kind is ErrorKind.CONTEXT_LENGTH_EXCEEDED:
                raise ConversationTooLong.from_detail(detail) from None
            raise _unavailable_or_bad(e) from None
        return list(response.ids)

    def decoder(self) -> IdDecoder:
        return _GrpcDecoder(self._stub.DecodeStream(), self.timeout_s)

    async def check(self) -> None:
        await self._call(self._stub.Info, pb.InfoRequest())

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, method: Any, request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            raise _unavailable_or_bad(e) from None


class _GrpcDecoder:
    """One DecodeStream call: the server answers each request with exactly one response.

    The call holds one of the server's worker threads while it is open, so it is always ended:
    `close` half-closes and drains it, and cancels it when that fails or is itself cancelled (a
    client that left); an abandoned call would pin a server thread until the server stopped.
    """

    def __init__(self, call: Any, timeout_s: float):
        self._call = call
        self._timeout_s = timeout_s

    async def feed(self, ids: Sequence[int]) -> str:
        try:
            await asyncio.wait_for(self._call.write(pb.DecodeStreamRequest(ids=list(ids))), self._timeout_s)
            response = await asyncio.wait_for(self._call.read(), self._timeout_s)
        except grpc.aio.AioRpcError as e:
            raise _unavailable_or_bad(e) from None
        except TimeoutError:
            self._call.cancel()
            raise CodecUnavailable(
                f"the tokenizer service did not decode within {self._timeout_s:g} s"
            ) from None
        if response is grpc.aio.EOF:
            raise CodecUnavailable("the tokenizer service ended the decode stream early")
        return response.text

    async def close(self) -> str:
        try:
            return await asyncio.wait_for(self._drain(), self._timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise _unavailable_or_bad(e) from None
            return ""
        except TimeoutError:
            raise CodecUnavailable("the tokenizer service did not end the decode stream") from None
        finally:
            self._call.cancel()  # a no-op once the call has ended; frees the server thread otherwise

    async def _drain(self) -> str:
        tail = ""
        await self._call.done_writing()
        while (response := await self._call.read()) is not grpc.aio.EOF:
            tail += response.text
        return tail


def _unavailable_or_bad(e: grpc.aio.AioRpcError) -> Exception:
    if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return APIError(400, f"tokenizer refused the input: {e.details()}", code="invalid_input")
    return CodecUnavailable(f"tokenizer service: {e.code().name}: {e.details()}")


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
