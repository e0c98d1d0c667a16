"""The gateway's Prometheus metrics, and the ASGI middleware that counts every request.

Labels never hold unbounded values: `route` is the route's template (`/v1/jobs/{job_id}`), or
`unmatched` for paths no route serves, never the raw path; there are no key ids or user ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Buckets from 1 ms (a rejected request) to 2 min (a long generation streamed to the end).
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "chatforge_http_requests_total",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "chatforge_http_request_duration_seconds",
            "time from request to the end of the response body",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.streams_open = Gauge("chatforge_gateway_streams_open", "SSE streams open now", registry=r)
        self.generated_tokens = Counter(
            "chatforge_gateway_generated_tokens_total", "completion tokens returned to clients", registry=r
        )
        self.rate_limited = Counter(
            "chatforge_gateway_rate_limited_total", "requests refused by a rate limit", ["bucket"], registry=r
        )
        self.jobs = Gauge(
            "chatforge_gateway_jobs", "jobs known to the gateway by state", ["state"], registry=r
        )
        self.generations_running = Gauge(
            "chatforge_gateway_generations_running", "generations holding a slot", registry=r
        )
        self.generations_waiting = Gauge(
            "chatforge_gateway_generations_waiting", "generations queued for a slot", registry=r
        )


class MetricsMiddleware:
    """Counts and times every HTTP request under its route template."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], GatewayMetrics]):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            m = self.metrics()
            m.requests.labels(template, method, str(status)).inc()
            m.latency.labels(template, method).observe(time.perf_counter() - start)
