"""The sandbox HTTP service: a thin FastAPI shell around `SandboxExecutor`.

API (also served as OpenAPI at /docs):
- `POST /v1/run` `{"code": str, "timeout_s"?: float, "memory_mb"?: int, "output_bytes"?: int}`
  runs the snippet with no stdin and answers a `ToolResult` (`chatforge.tools`): 200 for every run
  that started, whatever the snippet did (`outcome` says: ok, error, timeout, memory,
  output_limit); 429 with `outcome: "busy"` and `Retry-After` when the queue is full or no slot
  freed in time; 400 for limits outside the service's range; 413 for a body over
  `max_body_bytes` (6 x max_code_bytes + 4 KiB, counted as it streams, chunked or not); 422 for a
  malformed body (strict types: "5" is not 5); 503 with `outcome: "unavailable"` when the sandbox
  itself could not start a run.
- `GET /healthz`: `{"status": "ok", "mode": "namespaces" | "weak"}`.
- `GET /info`: the isolation mode and why, its layers, the interpreter, limits and concurrency.
- `GET /metrics`: Prometheus text (also on `metrics_port` alone when set).

The OpenAPI document (`/openapi.json`) carries the limits with this service's values and every
status the routes answer; `tests/sandbox/test_openapi.py` runs schemathesis against it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from pydantic import BaseModel, Field

from chatforge.body_limit import BodyLimit
from chatforge.contracts.strict import StrictModel
from chatforge.request_limits import limit, publish
from chatforge.tools import Outcome, ToolLimits, ToolResult

from .admission import Busy
from .executor import SandboxExecutor
from .metrics import SandboxMetrics
from .settings import Settings

log = logging.getLogger(__name__)

_STATUS_BY_OUTCOME = {"busy": 429, "unavailable": 503}


class RunRequest(StrictModel):
    # Strict: "5" is not 5. The ranges are checked by the executor (400 naming the field); the
    # schema states them, the maxima with this service's settings (`publish`).

    code: str = Field(
        description="Python source, run as a script with no stdin; over max_code_bytes it is an "
        "`error` outcome, not run"
    )
    timeout_s: float | None = Field(
        default=None,
        description="wall clock for the whole run; default from settings",
        json_schema_extra={"exclusiveMinimum": 0, **limit(maximum=("max_timeout_s", "limit"))},
    )
    memory_mb: int | None = Field(
        default=None,
        description="address space per process",
        json_schema_extra={"minimum": 64, **limit(maximum=("max_memory_mb", "limit"))},
    )
    output_bytes: int | None = Field(
        default=None,
        description="stdout and stderr are each cut here",
        json_schema_extra={"minimum": 1, **limit(maximum=("max_output_bytes", "limit"))},
    )


class Detail(BaseModel):
    """The sandbox's error body (FastAPI's): what was wrong, for a person to read."""

    detail: str


class RunResult(BaseModel):
    outcome: Outcome
    stdout: str
    stderr: str
    exit_code: int | None
    duration_s: float
    truncated: bool
    message: str


def create_app(settings: Settings, executor: SandboxExecutor | None = None) -> FastAPI:
    """The service app; builds (and probes) the executor unless one is given."""
    owned = executor is None
    executor = executor or SandboxExecutor(settings)
    iso = executor.isolation
    metrics = SandboxMetrics(executor.pool, iso.mode)
    log.info(
        "sandbox mode=%s layers=%s python=%s slots=%d queue=%d",
        iso.mode,
        ",".join(iso.layers()),
        iso.python,
        settings.max_concurrent,
        settings.max_queue,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One worker thread per admitted run (executing or queued), so admission alone decides
        # who waits; anyio's default pool of 40 would queue runs invisibly behind it.
        app.state.limiter = anyio.CapacityLimiter(settings.max_concurrent + settings.max_queue)
        exporter = None
        if settings.metrics_port:
            exporter, _ = start_http_server(
                settings.metrics_port, addr=settings.host, registry=metrics.registry
            )
            log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        try:
            yield
        finally:
            if exporter is not None:
                exporter.shutdown()
                exporter.server_close()
        if owned:
            executor.close()  # in-flight runs have finished: uvicorn drains requests first

    app = FastAPI(title="chatforge sandbox", version="1", lifespan=lifespan)
    # JSON escaping can grow code up to 6x (\uXXXX); anything larger is refused before it is
    # read, and a chunked body as soon as it passes this.
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes(settings), error_body=lambda m: {"detail": m})

    @app.post(
        "/v1/run",
        response_model=RunResult,
        responses={
            400: {"model": Detail, "description": "a limit outside the service's range (named)"},
            413: {"model": Detail, "description": "the body is over max_body_bytes"},
            429: {
                "model": RunResult,
                "description": "busy: every slot executing and the queue full",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
            503: {"model": RunResult, "description": "the sandbox could not start a run"},
        },
    )
    async def run(req: RunRequest) -> JSONResponse:
        defaults = settings.default_limits()
        limits = ToolLimits(
            timeout_s=req.timeout_s if req.timeout_s is not None else defaults.timeout_s,
            memory_mb=req.memory_mb if req.memory_mb is not None else defaults.memory_mb,
            output_bytes=req.output_bytes if req.output_bytes is not None else defaults.output_bytes,
        )
        try:
            limits = executor.check_limits(limits)
        except ValueError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None
        try:
            reservation = executor.reserve()
        except Busy as e:
            return _answer(ToolResult("busy", message=str(e)), metrics)
        try:
            result = await anyio.to_thread.run_sync(
                executor.run_reserved, reservation, req.code, limits, limiter=app.state.limiter
            )
        finally:
            reservation.cancel()  # a no-op once the run used it
        return _answer(result, metrics)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "mode": iso.mode}

    @app.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "mode": iso.mode,
            "weak_reason": iso.reason,
            "layers": iso.layers(),
            "python": iso.python,
            "defaults": asdict(settings.default_limits()),
            "maxima": {
                "timeout_s": settings.max_timeout_s,
                "memory_mb": settings.max_memory_mb,
                "output_bytes": settings.max_output_bytes,
                "code_bytes": settings.max_code_bytes,
            },
            "max_concurrent": settings.max_concurrent,
            "max_queue": settings.max_queue,
            "run_uids": executor.run_uids,
            "running": executor.pool.running,
            "waiting": executor.pool.waiting,
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = publish(
                get_openapi(title=app.title, version=app.version, routes=app.routes), settings
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def max_body_bytes(settings: Settings) -> int:
    """The largest request body read: max_code_bytes written as 6-byte escapes, plus the limits."""
    return 6 * settings.max_code_bytes + 4096


def _answer(result: ToolResult, metrics: SandboxMetrics) -> JSONResponse:
    metrics.observe(result)
    status = _STATUS_BY_OUTCOME.get(result.outcome, 200)
    headers = {"Retry-After": "1"} if result.outcome == "busy" else None
    if result.outcome not in ("ok", "error"):
        log.info("run outcome=%s duration_s=%.3f %s", result.outcome, result.duration_s, result.message)
    return JSONResponse(result.to_dict(), status_code=status, headers=headers)
