"""Stored conversations, per API key, so a UI keeps its history: create, list, get, rename, delete.

Each conversation is one JSON string in Redis with a TTL refreshed on every write; a per-owner sorted
set orders them by last update and is capped twice: by count (`max_per_owner`) and by the bytes of
all the owner's documents (`max_bytes_per_owner`); the oldest beyond either cap are deleted. One
document over `max_bytes` is refused (`DocumentTooLarge`) before anything is written. The shape of
what a client stores beside role and content is its own; `shape` measures it for the route's limits.
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
    max_bytes: int = 1024 * 1024
    max_bytes_per_owner: int = 64 * 1024 * 1024


class DocumentTooLarge(ValueError):
    """A conversation whose stored JSON would be over the size limit; nothing was written."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"the conversation would take {size} bytes stored, over the limit of {limit}")
        self.size = size
        self.limit = limit


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
        document = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        size = len(document.encode())
        if size > self.limits.max_bytes:
            raise DocumentTooLarge(size, self.limits.max_bytes)
        index = redis_keys.conversation_index(owner)
        pipe = self.redis.pipeline()
        pipe.set(redis_keys.conversation(owner, record["id"]), document, ex=self.limits.ttl_s)
        pipe.zadd(index, {record["id"]: now})
        pipe.expire(index, self.limits.ttl_s)
        pipe.zrange(index, 0, -1)  # oldest first
        *_, ids = pipe.execute()
        evicted = self._over_caps(owner, ids, keep=record["id"])
        if evicted:
            pipe = self.redis.pipeline()
            pipe.zrem(index, *evicted)
            pipe.delete(*[redis_keys.conversation(owner, i) for i in evicted])
            pipe.execute()

    def _over_caps(self, owner: str, ids: list[str], keep: str) -> list[str]:
        """The oldest ids to delete so the owner is within both caps (never `keep`, just written)."""
        evicted = ids[: max(0, len(ids) - self.limits.max_per_owner)]
        rest = ids[len(evicted) :]
        pipe = self.redis.pipeline()
        for conversation_id in rest:
            pipe.strlen(redis_keys.conversation(owner, conversation_id))  # 0 once expired
        sizes = dict(zip(rest, pipe.execute(), strict=True))
        total = sum(sizes.values())
        for conversation_id in rest:
            if total <= self.limits.max_bytes_per_owner:
                break
            if conversation_id != keep:
                evicted.append(conversation_id)
                total -= sizes[conversation_id]
        return evicted


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


def shape(value: Any) -> tuple[int, int]:
    """The nesting depth of a JSON value (a scalar is 0, `[]` is 1) and how many object keys it holds.

    Iterative, so a document nested past Python's recursion limit is measured, not a crash.
    """
    depth = keys = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            keys += len(node)
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        depth = max(depth, level)
        stack.extend((child, level + 1) for child in children)
    return depth, keys
