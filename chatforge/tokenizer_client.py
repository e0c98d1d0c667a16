"""The typed client of the gRPC tokenizer service: one module, a blocking and an asyncio flavour.

`TokenizerClient` (blocking: the CLI, benchmarks, tests) and `AsyncTokenizerClient` (asyncio: the
gateway) mirror the in-process API (`Tokenizer.encode/decode`, `chat.render_conversation`,
`detokenize.StreamDecoder`) and share everything but the channel: the request builders, the
conversation validation (the same `parse_conversation` the server uses, so a malformed one fails
before it is sent) and the error mapping. A failed call raises TokenizerServiceError carrying the
gRPC status name, the server's message and its `ErrorDetail` when it sent one; a conversation over
the length limit raises `chatforge.chat.ConversationTooLong` with the numbers the server sent.

Imports grpc and the generated stubs, not torch and not the service: the gateway image has neither.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from chatforge.chat import (
    ConversationTooLong,
    PythonCall,
    PythonOutput,
    RenderedConversation,
    TextPart,
    parse_conversation,
)
from chatforge.contracts.errors import ErrorDetail, ErrorKind, from_grpc_metadata
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc

DEFAULT_PORT = 50051
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORT}"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # matches the server's default


class TokenizerServiceError(RuntimeError):
    """A call the service refused or could not answer; `code` is the gRPC status name."""

    def __init__(self, method: str, code: str, details: str, detail: ErrorDetail | None = None):
        super().__init__(f"tokenizer service {method}: {code}: {details}")
        self.method = method
        self.code = code  # e.g. "INVALID_ARGUMENT", "UNAVAILABLE", "DEADLINE_EXCEEDED"
        self.details = details
        self.detail = detail  # the server's structured error, when it sent one


@dataclass(frozen=True)
class TokenizerInfo:
    name: str
    fingerprint: str
    vocab_size: int
    bos_id: int
    special_tokens: dict[str, int]  # token -> id, in id order

    @classmethod
    def from_proto(cls, r: pb.InfoResponse) -> TokenizerInfo:
        return cls(
            name=r.name,
            fingerprint=r.fingerprint,
            vocab_size=r.vocab_size,
            bos_id=r.bos_id,
            special_tokens={s.token: s.id for s in r.special_tokens},
        )


class TokenizerClient:
    """A blocking client over one channel; thread-safe, cheap to share, close it when done."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout_s: float = 10.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self.target = target
        self.timeout_s = timeout_s
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.TokenizerServiceStub(self._channel)

    def __enter__(self) -> TokenizerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the channel connects; TokenizerServiceError(UNAVAILABLE) after `timeout_s`."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TokenizerServiceError(
                "connect", "UNAVAILABLE", f"no tokenizer service at {self.target} after {timeout_s} s"
            ) from None

    # RPCs ------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self._call("Encode", pb.EncodeRequest(text=text)).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if isinstance(texts, str):  # list("abc") would quietly encode each character
            raise TypeError("encode_batch takes a sequence of str, not one str")
        response = self._call("EncodeBatch", pb.EncodeBatchRequest(texts=texts))
        return [list(item.ids) for item in response.items]

    def decode(self, ids: Sequence[int]) -> str:
        return self._call("Decode", pb.DecodeRequest(ids=ids)).text

    def count_tokens(self, text: str) -> int:
        return self._call("CountTokens", pb.CountTokensRequest(text=text)).count

    def render_conversation(
        self, conversation: Any, *, max_tokens: int | None = None, truncate: bool = False
    ) -> RenderedConversation:
        """Ids and loss mask, as `chatforge.chat.render_conversation` returns them."""
        request = pb.RenderConversationRequest(
            conversation=conversation_to_proto(conversation),
            with_loss_mask=True,
            max_tokens=max_tokens or 0,
            truncate=truncate,
        )
        r = self._call("RenderConversation", request)
        return RenderedConversation(list(r.ids), list(r.loss_mask), r.truncated)

    def render_for_completion(self, conversation: Any, *, max_tokens: int | None = None) -> list[int]:
        """Ids ending in `<|assistant_start|>`, as `chatforge.chat.render_for_completion` returns them;
        ConversationTooLong past `max_tokens`."""
        return list(self._call("RenderConversation", _completion_request(conversation, max_tokens)).ids)

    def decode_stream(
        self, chunks: Iterable[Sequence[int]], *, timeout_s: float | None = None
    ) -> Iterator[str]:
        """Text deltas for a stream of id chunks; never splits a character. Empty deltas are skipped.

        `chunks` may block between items (ids arriving from a model); the call's deadline,
        `timeout_s` (default: none), covers the whole stream.
        """
        requests = (pb.DecodeStreamRequest(ids=chunk) for chunk in chunks)
        call = self._stub.DecodeStream(requests, timeout=timeout_s)
        try:
            for response in call:
                if response.text:
                    yield response.text
        except grpc.RpcError as e:
            raise _service_error("DecodeStream", e) from None
        finally:  # a caller that stops early (its client went away) ends the stream on the server too
            call.cancel()

    def info(self) -> TokenizerInfo:
        return TokenizerInfo.from_proto(self._call("Info", pb.InfoRequest()))

    def reload(self, name: str | None = None, *, admin_token: str = "") -> TokenizerInfo:
        """Ask the server to load `name` (default: its current name, re-read) from its artifact store.
        `admin_token`: the server's CHATFORGE_TOKENIZER_ADMIN_TOKEN (not needed on loopback without one)."""
        metadata = (("authorization", f"Bearer {admin_token}"),) if admin_token else None
        return TokenizerInfo.from_proto(self._call("Reload", pb.ReloadRequest(name=name or ""), metadata))

    def _call(self, method: str, request: Any, metadata: Any = None) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout_s, metadata=metadata)
        except grpc.RpcError as e:
            raise _service_error(method, e) from None


class AsyncTokenizerClient:
    """The asyncio flavour over one `grpc.aio` channel (the gateway's); close it when done."""

    def __init__(self, target: str = DEFAULT_TARGET, *, timeout_s: float = 10.0):
        self.target = target
        self.timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = pb_grpc.TokenizerServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def info(self) -> TokenizerInfo:
        return TokenizerInfo.from_proto(await self._call("Info", pb.InfoRequest()))

    async def render_for_completion(self, conversation: Any, *, max_tokens: int | None = None) -> list[int]:
        """As `TokenizerClient.render_for_completion`."""
        return list(
            (await self._call("RenderConversation", _completion_request(conversation, max_tokens))).ids
        )

    def decode_session(self) -> AsyncDecodeSession:
        """One DecodeStream call for one generation: feed ids as they come, close at the end."""
        return AsyncDecodeSession(self._stub.DecodeStream(), self.timeout_s)

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            raise _service_error(method, e) from None


class AsyncDecodeSession:
    """One DecodeStream call: the server answers each request with exactly one response.

    The call holds one of the server's worker threads while it is open, so it is always ended:
    `close` half-closes and drains it, and cancels it when that fails or is itself cancelled (a
    client that left); an abandoned call would pin a server thread until the server stopped.
    """

    def __init__(self, call: Any, timeout_s: float):
        self._call = call
        self._timeout_s = timeout_s

    async def feed(self, ids: Sequence[int]) -> str:
        """The text these ids complete (possibly empty: a character may still be incomplete)."""
        try:
            await asyncio.wait_for(self._call.write(pb.DecodeStreamRequest(ids=list(ids))), self._timeout_s)
            response = await asyncio.wait_for(self._call.read(), self._timeout_s)
        except grpc.aio.AioRpcError as e:
            raise _service_error("DecodeStream", e) from None
        except TimeoutError:
            self._call.cancel()
            raise TokenizerServiceError(
                "DecodeStream", "DEADLINE_EXCEEDED", f"no answer within {self._timeout_s:g} s"
            ) from None
        if response is grpc.aio.EOF:
            raise TokenizerServiceError("DecodeStream", "UNAVAILABLE", "the server ended the stream early")
        return response.text

    async def close(self) -> str:
        """End the call; returns the text the server held back (an incomplete tail)."""
        try:
            return await asyncio.wait_for(self._drain(), self._timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                raise _service_error("DecodeStream", e) from None
            return ""
        except TimeoutError:
            raise TokenizerServiceError(
                "DecodeStream", "DEADLINE_EXCEEDED", "the server did not end the stream"
            ) from None
        finally:
            self._call.cancel()  # a no-op once the call has ended; frees the server thread otherwise

    async def _drain(self) -> str:
        tail = ""
        await self._call.done_writing()
        while (response := await self._call.read()) is not grpc.aio.EOF:
            tail += response.text
        return tail


def conversation_to_proto(conversation: Any) -> pb.Conversation:
    """Validate (the same checks the server makes) and convert to the wire form."""
    messages = []
    for m in parse_conversation(conversation).messages:
        parts = []
        for p in m.parts:
            if isinstance(p, TextPart):
                parts.append(pb.Part(text=p.text))
            elif isinstance(p, PythonCall):
                parts.append(pb.Part(python=p.code))
            elif isinstance(p, PythonOutput):
                parts.append(pb.Part(python_output=p.output))
        messages.append(pb.ChatMessage(role=m.role, parts=parts))
    return pb.Conversation(messages=messages)


def _completion_request(conversation: Any, max_tokens: int | None) -> pb.RenderConversationRequest:
    return pb.RenderConversationRequest(
        conversation=conversation_to_proto(conversation), for_completion=True, max_tokens=max_tokens or 0
    )


def _service_error(method: str, e: grpc.RpcError) -> Exception:
    """The exception a failed call stands for: ConversationTooLong when the server says so (its
    numbers come as fields, `chatforge.contracts.errors`), else TokenizerServiceError."""
    call: Any = e  # every RpcError raised by a call is also a grpc.Call, which carries the status
    detail = from_grpc_metadata(call.trailing_metadata())
    if detail is not None and detail.kind is ErrorKind.CONTEXT_LENGTH_EXCEEDED:
        return ConversationTooLong.from_detail(detail)
    return TokenizerServiceError(method, call.code().name, call.details() or "", detail)
