"""Requests whose bytes do not decode are the caller's error: INVALID_ARGUMENT, not INTERNAL.

gRPC's Python server answers INTERNAL ("Exception deserializing request!") when a message does not
parse, before any servicer code runs. This interceptor gives every TokenizerService method a
deserializer that never raises — it hands over an `Undecodable` marker instead — and answers the
marker with INVALID_ARGUMENT naming the method's message type (for DecodeStream, at the request
in the stream that does not decode, through the servicer's own error mapping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from tokenizer_svc.metrics import SERVICE
from tokenizer_svc.servicer import RequestError


@dataclass(frozen=True)
class Undecodable:
    """What a request that does not parse becomes: why, for the status message."""

    error: str


class UndecodableRequests(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE or handler.request_deserializer is None:
            return handler
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(method, handler.unary_unary),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _stream(method, handler.stream_stream),
                request_deserializer=parse,
                response_serializer=handler.response_serializer,
            )
        return handler  # the service has no other kinds of RPC


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as e:  # noqa: BLE001 - any parse failure is the request's fault
            return Undecodable(f"{type(e).__name__}: {e}")

    return parse


def _message(method: str, request: Undecodable) -> str:
    return f"the {method} request does not decode as its protobuf message ({request.error})"


def _unary(method: str, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, _message(method, request))
        return behavior(request, context)

    return unary


def _stream(
    method: str, behavior: Callable[[Any, Any], Iterator[Any]]
) -> Callable[[Any, Any], Iterator[Any]]:
    def stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        def checked() -> Iterator[Any]:
            for request in requests:
                if isinstance(request, Undecodable):
                    raise RequestError(_message(method, request))
                yield request

        yield from behavior(checked(), context)

    return stream
