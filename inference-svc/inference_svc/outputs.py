"""What a generation stream carries: one `StreamItem` per token or event.

Errors cross the stream as data (an "error" event, then the stream ends), never as an exception
halfway through, so every transport (Ray Serve handle, HTTP, the gateway's SSE) can pass them on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal["tool_call", "tool_result", "finish", "error"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Event:
    kind: EventKind
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamItem:
    """A new token (with the text it completed, possibly empty) and/or an event."""

    token_id: int | None = None
    text: str = ""
    event: Event | None = None

    @property
    def is_last(self) -> bool:
        return self.event is not None and self.event.kind in ("finish", "error")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamItem:
        event = data.get("event")
        return cls(data.get("token_id"), data.get("text", ""), Event(**event) if event else None)


def finish_event(reason: str, usage: Usage) -> Event:
    return Event(
        "finish", {"finish_reason": reason, "usage": {**asdict(usage), "total_tokens": usage.total_tokens}}
    )
