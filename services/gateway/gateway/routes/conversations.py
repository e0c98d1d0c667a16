"""Conversations stored per API key: create, list (or search), get, rename or replace messages, delete.

A stored message is a chat message (role and content, checked by the chat format, since a UI sends
it back to /v1/chat/completions) plus whatever else its client keeps on it (the web UI's
alternatives and branches): those keys are the client's, so they are bounded by size and shape —
document bytes, messages, nesting depth, object keys — not by name. Every write is charged to the
key's write bucket.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import ConfigDict, Field

from chatforge.contracts.strict import StrictModel
from chatforge.request_limits import first_violation, limit
from gateway.auth import ChatCaller, ChatWriter
from gateway.conversations import DocumentTooLarge, shape
from gateway.errors import APIError
from gateway.openai_types import ContentPart
from gateway.openapi import answers
from gateway.settings import Settings
from gateway.state import State

router = APIRouter(tags=["conversations"])
CHECKS = ("invalid_messages", "conversation_too_deep", "conversation_too_many_keys")


class StoredMessage(StrictModel):
    """A chat message as the chat format reads it; other keys are kept as the client sent them."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ConversationCreate(StrictModel):
    title: str = Field(
        default="New chat", json_schema_extra=limit(maxLength=("max_title_chars", "title_too_long"))
    )
    messages: list[StoredMessage] = Field(
        default_factory=list,
        json_schema_extra=limit(maxItems=("max_conversation_messages", "too_many_messages")),
    )


class ConversationUpdate(StrictModel):
    title: str | None = Field(
        default=None, json_schema_extra=limit(maxLength=("max_title_chars", "title_too_long"))
    )
    messages: list[StoredMessage] | None = Field(
        default=None, json_schema_extra=limit(maxItems=("max_conversation_messages", "too_many_messages"))
    )


@router.post("/v1/conversations", status_code=201, responses=answers(429, checks=CHECKS))
def create_conversation(body: ConversationCreate, state: State, caller: ChatWriter) -> dict[str, Any]:
    messages = _checked(body, state.settings)
    try:
        return state.conversations.create(caller.key_id, body.title, messages or [])
    except DocumentTooLarge as e:
        raise _too_large(e) from None


@router.get("/v1/conversations")
def list_conversations(
    state: State,
    caller: ChatCaller,
    limit: int = Query(100, ge=1, le=500),
    q: str = Query("", max_length=200, description="only conversations whose title or text contains this"),
) -> dict[str, Any]:
    return {"object": "list", "data": state.conversations.recent(caller.key_id, limit, q.strip())}


@router.get("/v1/conversations/{conversation_id}", responses=answers(404))
def get_conversation(conversation_id: str, state: State, caller: ChatCaller) -> dict[str, Any]:
    record = state.conversations.get(caller.key_id, conversation_id)
    if record is None:
        raise _not_found(conversation_id)
    return record


@router.patch("/v1/conversations/{conversation_id}", responses=answers(404, checks=CHECKS))
def update_conversation(
    conversation_id: str, body: ConversationUpdate, state: State, caller: ChatWriter
) -> dict[str, Any]:
    messages = _checked(body, state.settings)
    try:
        record = state.conversations.update(
            caller.key_id, conversation_id, title=body.title, messages=messages
        )
    except DocumentTooLarge as e:
        raise _too_large(e) from None
    if record is None:
        raise _not_found(conversation_id)
    return record


@router.delete("/v1/conversations/{conversation_id}", status_code=204, responses=answers(404))
def delete_conversation(conversation_id: str, state: State, caller: ChatWriter) -> Response:
    if not state.conversations.delete(caller.key_id, conversation_id):
        raise _not_found(conversation_id)
    return Response(status_code=204)


# --- helpers -------------------------------------------------------------------------------------


def _checked(body: ConversationCreate | ConversationUpdate, s: Settings) -> list[dict[str, Any]] | None:
    """The messages as they will be stored, once within the settings' size and shape limits."""
    violation = first_violation(body, s)
    if violation is not None:
        raise APIError(400, violation.message, param=violation.param, code=violation.code)
    if body.messages is None:
        return None
    messages = [m.model_dump(mode="json") for m in body.messages]
    depth, keys = shape(messages)
    if depth > s.max_conversation_depth:
        raise APIError(
            400, f"the messages nest {depth} levels deep, over the limit of {s.max_conversation_depth}",
            param="messages", code="conversation_too_deep",
        )  # fmt: skip
    if keys > s.max_conversation_keys:
        raise APIError(
            400, f"the messages hold {keys} object keys, over the limit of {s.max_conversation_keys}",
            param="messages", code="conversation_too_many_keys",
        )  # fmt: skip
    return messages


def _too_large(e: DocumentTooLarge) -> APIError:
    return APIError(413, str(e), param="messages", code="conversation_too_large")


def _not_found(conversation_id: str) -> APIError:
    return APIError(
        404, f"no conversation {conversation_id!r}", param="conversation_id", code="conversation_not_found"
    )
