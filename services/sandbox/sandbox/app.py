"""The sandbox HTTP service: a thin FastAPI shell around `SandboxExecutor`.

API (also served as OpenAPI at /docs):
- `POST /v1/run` `{"code": str, "timeout_s"?: float, "memory_mb"?: int, "output_bytes"?: int}`
  runs the snippet with no stdin and answers a `ToolResult` (`chatforge.tools`): 200 for every run
  that started, whatever the snippet did (`outcome` says: ok, error, timeout, memory,
  output_limit); 429 with `outcome: "busy"` and `Retry-After` when the queue is full or no slot
  freed in time; 400 for limits outside the service's maxima; 413 for a body far beyond
  max_code_bytes; 422 for a malformed body; 503 with `outcome: "unavailable"` when the sandbox
  itself could not start a run.
- `GET /healthz`: `{"status": "ok", "mode": "namespaces" | "weak"}`.
- `GET /info`: the isolation mode and why, its layers, the interpreter, limits and concurrency.
- `GET /metrics`: Prometheus text.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from chatforge.tools import Outcome, ToolLimits, ToolResult

from .admission import Busy
from .executor import SandboxExecutor
from .metrics import SandboxMetrics
from .settings import Settings

log = logging.getLogger(__name__)

_STATUS_BY_OUTCOME = {"busy": 429, "unavailable": 503}


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Python source, run as a script with no stdin")
    timeout_s: float | None = Field(
        default=None, description="wall clock for the whole run; default from settings"
    )
    memory_mb: int | None = Field(default=None, description="address space per process")
    output_bytes: int | None = Field(default=None, description="stdout and stderr are each cut here")


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
        yield
        if owned:
            executor.close()  # in-flight runs have finished: uvicorn drains requests first

    app = FastAPI(title="chatforge sandbox", version="1", lifespan=lifespan)
    # JSON escaping can grow code up to 6x (\uXXXX); anything larger is refused before it is read.
    max_body_bytes = 6 * settings.max_code_bytes + 4096

    @app.middleware("http")
    async def refuse_huge_bodies(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            detail = f"request body is {length} bytes; the limit is {max_body_bytes}"
            return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)

    @app.post(
        "/v1/run", response_model=RunResult, responses={429: {"model": RunResult}, 503: {"model": RunResult}}
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

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _answer(result: ToolResult, metrics: SandboxMetrics) -> JSONResponse:
    metrics.observe(result)
    status = _STATUS_BY_OUTCOME.get(result.outcome, 200)
    headers = {"Retry-After": "1"} if result.outcome == "busy" else None
    if result.outcome not in ("ok", "error"):
        log.info("run outcome=%s duration_s=%.3f %s", result.outcome, result.duration_s, result.message)
    return JSONResponse(result.to_dict(), status_code=status, headers=headers)
