"""Conversations stored per API key: create, list (or search), get, rename or replace messages, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.auth import ChatCaller
from gateway.errors import APIError
from gateway.state import State

router = APIRouter(tags=["conversations"])


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(default="New chat", max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list, max_length=1000)


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str | None = Field(default=None, max_length=200)
    messages: list[dict[str, Any]] | None = Field(default=None, max_length=1000)


@router.post("/v1/conversations", status_code=201)
def create_conversation(body: ConversationCreate, state: State, caller: ChatCaller) -> dict[str, Any]:
    return state.conversations.create(caller.key_id, body.title, body.messages)


@router.get("/v1/conversations")
def list_conversations(
    state: State,
    caller: ChatCaller,
    limit: int = Query(100, ge=1, le=500),
    q: str = Query("", max_length=200, description="only conversations whose title or text contains this"),
) -> dict[str, Any]:
    return {"object": "list", "data": state.conversations.recent(caller.key_id, limit, q.strip())}


@router.get("/v1/conversations/{conversation_id}")
def get_conversation(conversation_id: str, state: State, caller: ChatCaller) -> dict[str, Any]:
    record = state.conversations.get(caller.key_id, conversation_id)
    if record is None:
        raise _not_found(conversation_id)
    return record


@router.patch("/v1/conversations/{conversation_id}")
def update_conversation(
    conversation_id: str, body: ConversationUpdate, state: State, caller: ChatCaller
) -> dict[str, Any]:
    record = state.conversations.update(
        caller.key_id, conversation_id, title=body.title, messages=body.messages
    )
    if record is None:
        raise _not_found(conversation_id)
    return record


@router.delete("/v1/conversations/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: str, state: State, caller: ChatCaller) -> Response:
    if not state.conversations.delete(caller.key_id, conversation_id):
        raise _not_found(conversation_id)
    return Response(status_code=204)


def _not_found(conversation_id: str) -> APIError:
    return APIError(
        404, f"no conversation {conversation_id!r}", param="conversation_id", code="conversation_not_found"
    )
