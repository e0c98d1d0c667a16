"""API keys over HTTP for admins (the CLI does the same against Redis directly)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from chatforge.contracts.strict import StrictModel
from gateway.auth import AdminCaller, AdminWriter, KeyRequestError
from gateway.errors import APIError
from gateway.openapi import answers
from gateway.state import State

router = APIRouter(tags=["admin"])


class KeyCreate(StrictModel):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Literal["chat", "admin"]] = Field(default=["chat"], min_length=1, max_length=2)


@router.post("/v1/admin/keys", status_code=201)
def create_key(body: KeyCreate, state: State, caller: AdminWriter) -> dict[str, Any]:
    try:
        key, info = state.keys.create(body.name, body.scopes)
    except KeyRequestError as e:
        raise APIError(400, str(e), param="scopes", code="invalid_scopes") from None
    return {"key": key, **info.to_dict()}


@router.get("/v1/admin/keys")
def list_keys(state: State, caller: AdminCaller) -> dict[str, Any]:
    return {"object": "list", "data": [k.to_dict() for k in state.keys.list()]}


@router.delete("/v1/admin/keys/{key_id}", responses=answers(404))
def revoke_key(key_id: str, state: State, caller: AdminWriter) -> dict[str, Any]:
    if not state.keys.revoke(key_id):
        raise APIError(404, f"no API key with id {key_id!r}", param="key_id", code="key_not_found")
    return {"id": key_id, "revoked": True}
