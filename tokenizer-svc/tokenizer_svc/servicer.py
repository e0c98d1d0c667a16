"""The TokenizerService RPCs: a thin adapter from protobuf messages to the shared tokenizer code.

All the logic lives in `chatforge.tokenizer`, `chatforge.chat` and `chatforge.detokenize`; this file
checks request limits, converts messages, and maps errors to gRPC statuses in one place (`_rpc`):
a bad request is INVALID_ARGUMENT with a message that names the problem, never a crash.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from chatforge.artifacts import ArtifactError, check_name
from chatforge.chat import (
    ConversationError,
    ConversationTooLong,
    parse_conversation,
    render_conversation,
    render_for_completion,
)
from chatforge.contracts.errors import to_grpc_metadata
from chatforge.detokenize import StreamDecoder
from chatforge.tokenizer import TokenizerError
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from tokenizer_svc.metrics import TokenizerMetrics
from tokenizer_svc.slot import Loaded, TokenizerSlot

log = logging.getLogger(__name__)

# EncodeBatch works in chunks of this many texts and checks the deadline between them, so an
# abandoned request stops within one chunk's time (~10 ms for 64 prompt-sized texts).
BATCH_CHUNK_TEXTS = 64


@dataclass(frozen=True)
class Limits:
    max_text_chars: int
    max_batch_texts: int
    max_ids: int
    reload_enabled: bool
    max_messages: int = 1024
    max_parts: int = 16_384
    admin_token: str = ""  # Reload's credential; empty: Reload only when `loopback`
    loopback: bool = True  # the server listens on loopback only


class RequestError(ValueError):
    """A request the service refuses (over a limit, an impossible combination of fields)."""


class Unauthenticated(PermissionError):
    """An admin RPC without its credential."""


class DeadlineExpired(Exception):
    """The caller's deadline passed while the request was being worked on."""


class ReloadFailed(Exception):
    """A tokenizer that exists but does not load; the old one keeps serving."""


_Handler = TypeVar("_Handler", bound=Callable[..., Any])


def _rpc(method: _Handler) -> _Handler:
    """Map exceptions to gRPC statuses, once for every unary RPC."""

    @functools.wraps(method)
    def wrapper(self: TokenizerServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as e:  # noqa: BLE001 - mapped to a status right below, never swallowed
            _abort(context, e, method.__name__)

    return wrapper  # type: ignore[return-value]


def _abort(context: grpc.ServicerContext, e: Exception, method: str) -> None:
    if not context.is_active():  # the client cancelled or its deadline passed: nobody gets this status
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED, "client gone"
        )
    if isinstance(e, ConversationTooLong):  # the numbers travel as fields, not inside the message
        context.set_trailing_metadata(to_grpc_metadata(e.detail))
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    if isinstance(e, RequestError | TokenizerError | ConversationError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
    if isinstance(e, ArtifactError):
        context.abort(grpc.StatusCode.NOT_FOUND, str(e))
    if isinstance(e, ReloadFailed):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
    if isinstance(e, DeadlineExpired):
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline passed during {method}")
    if isinstance(e, Unauthenticated):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
    if isinstance(e, PermissionError):
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
    log.exception("%s failed", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(e).__name__}")


class TokenizerServicer(pb_grpc.TokenizerServiceServicer):
    def __init__(self, slot: TokenizerSlot, limits: Limits, metrics: TokenizerMetrics):
        self._slot = slot
        self._limits = limits
        self._metrics = metrics
        metrics.vocab_size.set(slot.current.tokenizer.vocab_size)

    @property
    def loaded(self) -> Loaded:
        return self._slot.current

    @_rpc
    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        self._check_text(request.text, "text")
        ids = self._slot.current.tokenizer.encode(request.text)
        self._metrics.tokens.labels("Encode").inc(len(ids))
        return pb.EncodeResponse(ids=ids)

    @_rpc
    def EncodeBatch(
        self, request: pb.EncodeBatchRequest, context: grpc.ServicerContext
    ) -> pb.EncodeBatchResponse:
        texts = list(request.texts)
        if len(texts) > self._limits.max_batch_texts:
            raise RequestError(
                f"batch of {len(texts)} texts is over the limit of {self._limits.max_batch_texts}"
            )
        for i, text in enumerate(texts):
            self._check_text(text, f"texts[{i}]")
        tokenizer = self._slot.current.tokenizer
        items: list[pb.TokenIds] = []
        for start in range(0, len(texts), BATCH_CHUNK_TEXTS):
            _check_deadline(context)
            items.extend(
                pb.TokenIds(ids=ids)
                for ids in tokenizer.encode_batch(texts[start : start + BATCH_CHUNK_TEXTS])
            )
        self._metrics.tokens.labels("EncodeBatch").inc(sum(len(item.ids) for item in items))
        return pb.EncodeBatchResponse(items=items)

    @_rpc
    def Decode(self, request: pb.DecodeRequest, context: grpc.ServicerContext) -> pb.DecodeResponse:
        self._check_ids(len(request.ids))
        text = self._slot.current.tokenizer.decode(list(request.ids))
        self._metrics.tokens.labels("Decode").inc(len(request.ids))
        return pb.DecodeResponse(text=text)

    @_rpc
    def CountTokens(
        self, request: pb.CountTokensRequest, context: grpc.ServicerContext
    ) -> pb.CountTokensResponse:
        self._check_text(request.text, "text")
        n = len(self._slot.current.tokenizer.encode(request.text))
        self._metrics.tokens.labels("CountTokens").inc(n)
        return pb.CountTokensResponse(count=n)

    @_rpc
    def RenderConversation(
        self, request: pb.RenderConversationRequest, context: grpc.ServicerContext
    ) -> pb.RenderConversationResponse:
        if request.max_tokens < 0:
            raise RequestError(f"max_tokens must be >= 0 (0: no limit), got {request.max_tokens}")
        if request.truncate and not request.max_tokens:
            raise RequestError("truncate needs max_tokens > 0")
        if request.for_completion and (request.with_loss_mask or request.truncate):
            raise RequestError(
                "for_completion takes neither with_loss_mask nor truncate: a prompt has no loss mask"
            )
        conversation = parse_conversation(self._conversation_data(request.conversation))
        tokenizer = self._slot.current.tokenizer
        max_tokens = request.max_tokens or None
        if request.for_completion:
            ids = render_for_completion(tokenizer, conversation, max_tokens=max_tokens)
            response = pb.RenderConversationResponse(ids=ids)
        else:
            rendered = render_conversation(
                tokenizer, conversation, max_tokens=max_tokens, truncate=request.truncate
            )
            mask = rendered.mask if request.with_loss_mask else []
            response = pb.RenderConversationResponse(
                ids=rendered.ids, loss_mask=mask, truncated=rendered.truncated
            )
        self._metrics.tokens.labels("RenderConversation").inc(len(response.ids))
        return response

    def DecodeStream(
        self, requests: Iterator[pb.DecodeStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.DecodeStreamResponse]:
        # One tokenizer for the whole stream: a reload mid-stream must not change what ids mean.
        decoder = StreamDecoder(self._slot.current.tokenizer)
        n = 0
        try:
            for request in requests:
                _check_deadline(context)
                self._check_ids(len(request.ids))
                text = decoder.feed_many(list(request.ids))
                n += len(request.ids)
                yield pb.DecodeStreamResponse(text=text)
            yield pb.DecodeStreamResponse(text=decoder.flush(), final=True)
        except Exception as e:  # noqa: BLE001 - mapped to a status, as _rpc does for unary RPCs
            _abort(context, e, "DecodeStream")
        finally:
            self._metrics.tokens.labels("DecodeStream").inc(n)

    @_rpc
    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        return _info(self._slot.current)

    @_rpc
    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        self._check_admin(context)
        name = request.name or None
        if name is not None:
            try:
                check_name("tokenizer", name)
            except ArtifactError as e:  # a malformed name is the caller's error, not a missing artifact
                raise RequestError(str(e)) from None
        return _info(self.reload(name))

    def reload(self, name: str | None = None) -> Loaded:
        """Swap in a tokenizer from the store (the Reload RPC and SIGHUP); the old one stays on failure."""
        try:
            loaded = self._slot.reload(name)
        except ArtifactError:
            self._metrics.reloads.labels("failed").inc()
            raise
        except TokenizerError as e:
            self._metrics.reloads.labels("failed").inc()
            raise ReloadFailed(f"tokenizer {name or self._slot.current.name!r} did not load: {e}") from None
        self._metrics.reloads.labels("ok").inc()
        self._metrics.vocab_size.set(loaded.tokenizer.vocab_size)
        return loaded

    # request checks --------------------------------------------------------------------------
    def _check_admin(self, context: grpc.ServicerContext) -> None:
        """Reload is an admin's: the token when one is set, else only a loopback-only server."""
        limits = self._limits
        if not limits.reload_enabled:
            raise PermissionError(
                "Reload is disabled on this server (CHATFORGE_TOKENIZER_RELOAD_ENABLED=false)"
            )
        if not limits.admin_token:
            if not limits.loopback:
                raise PermissionError(
                    "Reload needs an admin token off loopback: set CHATFORGE_TOKENIZER_ADMIN_TOKEN "
                    "(or reload with SIGHUP)"
                )
            return
        sent = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = str(sent).partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), limits.admin_token):
            raise Unauthenticated("Reload needs 'authorization: Bearer <admin token>' metadata")

    def _check_text(self, text: str, where: str) -> None:
        if len(text) > self._limits.max_text_chars:
            raise RequestError(
                f"{where} has {len(text)} characters, over the limit of {self._limits.max_text_chars}"
            )

    def _check_ids(self, n: int) -> None:
        if n > self._limits.max_ids:
            raise RequestError(f"{n} ids in one request, over the limit of {self._limits.max_ids}")

    def _conversation_data(self, conversation: pb.Conversation) -> dict[str, Any]:
        """The wire form as the JSON-like data `parse_conversation` validates (one validator)."""
        # Counted before anything is built: len() of a repeated field costs nothing.
        n_messages = len(conversation.messages)
        if n_messages > self._limits.max_messages:
            raise RequestError(
                f"conversation has {n_messages} messages, over the limit of {self._limits.max_messages}"
            )
        n_parts = sum(len(m.parts) for m in conversation.messages)
        if n_parts > self._limits.max_parts:
            raise RequestError(
                f"conversation has {n_parts} parts, over the limit of {self._limits.max_parts}"
            )
        messages, total = [], 0
        for i, m in enumerate(conversation.messages):
            content = []
            for j, part in enumerate(m.parts):
                kind = part.WhichOneof("kind")
                if kind is None:
                    raise ConversationError(
                        f"messages[{i}].parts[{j}]: empty part (set text, python or python_output)"
                    )
                text = getattr(part, kind)
                total += len(text)
                content.append({"type": kind, "text": text})
            messages.append({"role": m.role, "content": content})
        if total > self._limits.max_text_chars:
            raise RequestError(
                f"conversation has {total} characters, over the limit of {self._limits.max_text_chars}"
            )
        return {"messages": messages}


def _check_deadline(context: grpc.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExpired


def _info(loaded: Loaded) -> pb.InfoResponse:
    tokenizer = loaded.tokenizer
    specials = sorted(tokenizer.special_ids.items(), key=lambda kv: kv[1])
    return pb.InfoResponse(
        name=loaded.name,
        fingerprint=loaded.fingerprint,
        vocab_size=tokenizer.vocab_size,
        bos_id=tokenizer.bos_id,
        special_tokens=[pb.SpecialToken(token=t, id=i) for t, i in specials],
    )
