"""The jobs API: submit, list, get, cancel, follow events (SSE), logs and artifacts. Admin only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import PlainTextResponse

from chatforge.contracts.events import JobStateEvent
from chatforge.contracts.jobs import JobSpec
from gateway.auth import AdminCaller, AdminWriter
from gateway.openapi import answers
from gateway.sse import SSEResponse
from gateway.state import State

router = APIRouter(tags=["jobs"])


@router.post("/v1/jobs", status_code=201, responses=answers(502, checks=("invalid_config",)))
def submit_job(body: JobSpec, state: State, caller: AdminWriter) -> dict[str, Any]:
    return state.jobs.submit(body, caller.key_id).to_api()


@router.get("/v1/jobs")
def list_jobs(state: State, caller: AdminCaller, limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    return {"object": "list", "data": [r.to_api() for r in state.jobs.recent(limit)]}


@router.get("/v1/jobs/{job_id}", responses=answers(404))
def get_job(job_id: str, state: State, caller: AdminCaller) -> dict[str, Any]:
    return state.jobs.get(job_id).to_api()


@router.post("/v1/jobs/{job_id}/cancel", responses=answers(404, 409, 502))
def cancel_job(job_id: str, state: State, caller: AdminWriter) -> dict[str, Any]:
    return state.jobs.cancel(job_id).to_api()


@router.get("/v1/jobs/{job_id}/logs", response_class=PlainTextResponse, responses=answers(404, 502))
def job_logs(job_id: str, state: State, caller: AdminCaller) -> str:
    return state.jobs.logs(job_id)


@router.get("/v1/jobs/{job_id}/artifacts", responses=answers(404))
def job_artifacts(job_id: str, state: State, caller: AdminCaller) -> dict[str, Any]:
    return {"object": "list", "data": state.jobs.artifacts_of(job_id)}


@router.get(
    "/v1/jobs/{job_id}/events",
    response_model=None,
    responses={
        200: {
            "description": "server-sent events: the job's state, its progress events, then `end`",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **answers(404),
    },
)
async def job_events(
    job_id: str,
    state: State,
    caller: AdminCaller,
    after: str = Query("0", pattern=r"^\d+(-\d+)?$", description="stream id to continue after"),
    last_event_id: str = Header("", pattern=r"^(\d+(-\d+)?)?$", description="an event id (SSE reconnect)"),
) -> SSEResponse:
    """Progress events live from the job's Redis stream, then a final `state` event when it ends."""
    await asyncio.to_thread(state.jobs.get, job_id)  # 404 before the stream starts
    return SSEResponse(_follow(state, job_id, last_event_id or after))


async def _follow(state: Any, job_id: str, after: str) -> AsyncGenerator[bytes, None]:
    jobs = state.jobs
    last_state = ""
    while True:
        # The state first (a client learns where the job stands at once), then whatever events are
        # there; the stream ends only when the job has ended and a read finds nothing more.
        record = await asyncio.to_thread(jobs.get, job_id)
        if record.state != last_state:
            last_state = record.state
            yield _sse(
                JobStateEvent(state=record.state, message=record.message).model_dump(mode="json"), None
            )
        events = await asyncio.to_thread(jobs.read_events, job_id, after, 500)
        for entry_id, data in events:
            after = entry_id
            yield _sse(data, entry_id)
        if record.terminal and not events:
            yield b"event: end\ndata: {}\n\n"
            return


def _sse(data: dict[str, Any], entry_id: str | None) -> bytes:
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
