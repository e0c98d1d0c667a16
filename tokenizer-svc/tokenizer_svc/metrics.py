"""Prometheus metrics of the tokenizer service, and the interceptor that records every RPC.

Each server owns its registry (not the process-global one), so tests and benchmarks can run
several servers in one process. Labels are bounded: `method` is one of the service's RPC names,
`code` a gRPC status name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SERVICE = "chatforge.v1.TokenizerService"

# An Encode of a short prompt takes ~0.1 ms in process; a max-size batch takes seconds.
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
)


class TokenizerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "chatforge_tokenizer_requests",  # exposed as ..._requests_total
            "Tokenizer RPCs by method and final gRPC status",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chatforge_tokenizer_request_duration_seconds",
            "Time from an RPC's arrival to its last response, by method",
            ["method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.tokens = Counter(
            "chatforge_tokenizer_tokens",
            "Token ids produced (encode, render) or consumed (decode), by method",
            ["method"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "chatforge_tokenizer_reloads",
            "Tokenizer reloads by outcome (ok or failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.vocab_size = Gauge(
            "chatforge_tokenizer_vocab_size",
            "Vocabulary size of the tokenizer being served",
            registry=self.registry,
        )

    def observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.requests.labels(method, code.name).inc()
        self.latency.labels(method).observe(seconds)


class MetricsInterceptor(grpc.ServerInterceptor):
    """Times every TokenizerService RPC and counts it by its final status code."""

    def __init__(self, metrics: TokenizerMetrics):
        self._metrics = metrics

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service != SERVICE:  # health, reflection, unknown methods
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # the service has no other kinds of RPC

    def _unary(self, method: str, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def wrapper(request: Any, context: Any) -> Any:
            t0 = time.perf_counter()
            try:
                response = behavior(request, context)
            except BaseException:
                self._metrics.observe(method, _code(context, finished=False), time.perf_counter() - t0)
                raise
            self._metrics.observe(method, _code(context, finished=True), time.perf_counter() - t0)
            return response

        return wrapper

    def _stream(
        self, method: str, behavior: Callable[[Any, Any], Iterator[Any]]
    ) -> Callable[[Any, Any], Any]:
        def wrapper(requests: Any, context: Any) -> Iterator[Any]:
            t0 = time.perf_counter()
            finished = False
            try:
                yield from behavior(requests, context)
                finished = True
            finally:  # also runs when gRPC closes the generator of a cancelled stream
                self._metrics.observe(method, _code(context, finished), time.perf_counter() - t0)

        return wrapper


def _code(context: Any, finished: bool) -> grpc.StatusCode:
    """The status the client sees: the one the servicer set, else OK, CANCELLED or DEADLINE_EXCEEDED."""
    code = context.code()
    if code is not None:
        return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    if finished and context.is_active():
        return grpc.StatusCode.OK
    if not finished and context.is_active():
        return grpc.StatusCode.UNKNOWN  # an exception the servicer did not map (a bug)
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
