"""`/healthz` (the process answers), `/readyz` (Redis, tokenizer and inference answer), `/metrics`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.state import State

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "not ready: `checks` says which part fails",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    },
)
async def readyz(state: State) -> JSONResponse:
    checks: dict[str, Any] = {}
    for name, check in (
        ("redis", lambda: asyncio.to_thread(state.redis.ping)),
        ("tokenizer", state.codec.check),
        ("inference", state.inference.check),
    ):
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            checks[name] = "ok"
        except Exception as e:  # noqa: BLE001 - any failure means not ready; the message says which
            checks[name] = f"failing: {e or type(e).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: State) -> Response:
    m = state.metrics
    m.generations_running.set(state.admission.running)
    m.generations_waiting.set(state.admission.waiting)
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
