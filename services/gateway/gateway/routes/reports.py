"""Report cards: the runs that have one, and the card's files (report.md and its plots)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from chatforge.artifacts import ArtifactError, check_name
from gateway.auth import ChatCaller
from gateway.errors import APIError
from gateway.openapi import answers
from gateway.state import State

router = APIRouter(tags=["reports"])
# What a report folder holds (trainer/report.py); nothing else is served from the store.
MEDIA_TYPES = {
    ".md": "text/markdown; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}


@router.get("/v1/reports")
def list_reports(state: State, caller: ChatCaller) -> dict[str, Any]:
    data = []
    for run in state.store.runs():
        card = state.store.run_dir(run) / "report" / "report.md"
        if card.is_file():
            data.append({"object": "report", "run": run, "updated": int(card.stat().st_mtime)})
    return {"object": "list", "data": data}


@router.get(
    "/v1/reports/{run}/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "a file of the run's report card",
            "content": {
                media: {"schema": {"type": "string"}}
                for media in ("text/markdown", "image/png", "image/svg+xml", "application/json")
            },
        },
        **answers(404),
    },
)
def report_file(run: str, name: str, state: State, caller: ChatCaller) -> FileResponse:
    # A name that could not be an artifact's names no report file: 404, like one that is not there.
    try:
        path = state.store.run_dir(run) / "report" / check_name("report file", name)
    except ArtifactError:
        path = None
    media_type = MEDIA_TYPES.get(path.suffix) if path is not None else None
    if path is None or media_type is None or not path.is_file():
        raise APIError(404, f"no report file {name!r} for run {run!r}", code="report_not_found")
    return FileResponse(path, media_type=media_type)
