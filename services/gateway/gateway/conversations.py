"""Stored conversations, per API key, so a UI keeps its history: create, list, get, rename, delete.

Each conversation is one JSON string in Redis with a TTL refreshed on every write; a per-owner sorted
set orders them by last update and is capped (the oldest beyond the cap are deleted).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from chatforge.chat import parse_conversation
from gateway import redis_keys


@dataclass(frozen=True)
class ConversationLimits:
    ttl_s: int
    max_per_owner: int


class ConversationStore:
    def __init__(self, redis: Any, limits: ConversationLimits):
        self.redis = redis
        self.limits = limits

    def create(self, owner: str, title: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        _check_messages(messages)
        now = time.time()
        record = {
            "id": "conv_" + secrets.token_hex(8), "object": "conversation", "title": title,
            "created": int(now), "updated": int(now), "messages": messages,
        }  # fmt: skip
        self._write(owner, record, now)
        return record

    def get(self, owner: str, conversation_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(redis_keys.conversation(owner, conversation_id))
        return json.loads(raw) if raw else None

    def recent(self, owner: str, limit: int = 100, query: str = "") -> list[dict[str, Any]]:
        """Newest first, without messages; with `query`, only those whose title or message text
        contains it (case-insensitive). A search reads every stored conversation of the owner, at
        most `max_per_owner`."""
        index = redis_keys.conversation_index(owner)
        ids = self.redis.zrevrange(index, 0, -1 if query else limit - 1)
        raws = self.redis.mget([redis_keys.conversation(owner, i) for i in ids]) if ids else []
        needle = query.casefold()
        out = []
        for conversation_id, raw in zip(ids, raws, strict=True):
            if raw is None:  # expired: drop it from the index too
                self.redis.zrem(index, conversation_id)
                continue
            record = json.loads(raw)
            messages = record.pop("messages", None) or []
            if needle and not any(needle in text.casefold() for text in _texts(record, messages)):
                continue
            out.append(record)
            if len(out) == limit:
                break
        return out

    def update(
        self, owner: str, conversation_id: str, *, title: str | None, messages: list[dict[str, Any]] | None
    ) -> dict[str, Any] | None:
        record = self.get(owner, conversation_id)
        if record is None:
            return None
        if messages is not None:
            _check_messages(messages)
            record["messages"] = messages
        if title is not None:
            record["title"] = title
        now = time.time()
        record["updated"] = int(now)
        self._write(owner, record, now)
        return record

    def delete(self, owner: str, conversation_id: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.delete(redis_keys.conversation(owner, conversation_id))
        pipe.zrem(redis_keys.conversation_index(owner), conversation_id)
        deleted, _ = pipe.execute()
        return bool(deleted)

    def _write(self, owner: str, record: dict[str, Any], now: float) -> None:
        index = redis_keys.conversation_index(owner)
        pipe = self.redis.pipeline()
        pipe.set(redis_keys.conversation(owner, record["id"]), json.dumps(record), ex=self.limits.ttl_s)
        pipe.zadd(index, {record["id"]: now})
        pipe.expire(index, self.limits.ttl_s)
        pipe.zrange(index, 0, -self.limits.max_per_owner - 1)  # the oldest beyond the cap
        *_, evicted = pipe.execute()
        if evicted:
            pipe = self.redis.pipeline()
            pipe.zrem(index, *evicted)
            pipe.delete(*[redis_keys.conversation(owner, i) for i in evicted])
            pipe.execute()


def _texts(record: dict[str, Any], messages: list[dict[str, Any]]) -> list[str]:
    """The title and every text a search looks in: string contents and parts' text."""
    texts = [str(record.get("title", ""))]
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return texts


def _check_messages(messages: list[dict[str, Any]]) -> None:
    """Stored messages follow the chat schema (they are sent back to /v1/chat/completions)."""
    if messages:
        parse_conversation({"messages": messages})
