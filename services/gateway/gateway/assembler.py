"""From generated stream items to what a client sees: text deltas, tool activity, a finish reason.

Pure logic over ids and strings (the decoder is injected), tested without a server. The engine's
ids include the chat format's special tokens and the python tool's code and output; only ordinary
text outside tool blocks becomes message text. Tool calls and their outputs become `tool` deltas so
a UI can show them. Stop strings are matched here, across deltas: text that might be the start of a
stop string is held back until it is known not to be.

Text comes from one of two stream decoders, both `chatforge.detokenize.StreamDecoder`: the tokenizer
service's DecodeStream (`decoder` given: one RPC per piece) or the engine's own, whose text rides
along with each id (`decoder` None: no extra round trip; used when the engine has the tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatforge.contracts.generate import (
    ErrorEvent,
    FinishEvent,
    StreamItem,
    ToolCallEvent,
    ToolResultEvent,
)
from gateway.codec import IdDecoder


@dataclass
class Delta:
    text: str = ""
    tool: dict[str, Any] | None = None  # {"type": "python_call", "code"} or {"type": "python_output", ...}


@dataclass
class Outcome:
    finish_reason: str | None = None  # stop, length, error (set once the choice has ended)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""


class StopScanner:
    """Cuts text at the first stop string, holding back a tail that could begin one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self._held + text
        hits = [i for i in (buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return buffer[: min(hits)]
        keep = max((_overlap(buffer, s) for s in self.stops), default=0)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if stop.startswith(text[-n:]):
            return n
    return 0


@dataclass
class ChoiceAssembler:
    """One choice's stream: feed stream items, get deltas; `outcome` says how and when it ended."""

    special_ids: dict[str, int]
    decoder: IdDecoder | None  # None: use the engine's text
    stops: StopScanner
    outcome: Outcome = field(default_factory=Outcome)
    _block: str = ""  # "", "python" or "output": inside a tool block, ids are not message text
    _closed: bool = False

    def __post_init__(self) -> None:
        sp = self.special_ids
        self._specials = set(sp.values())
        self._opens = {sp.get("<|python_start|>"): "python", sp.get("<|output_start|>"): "output"}
        self._closes = {sp.get("<|python_end|>"), sp.get("<|output_end|>")}

    async def feed(self, item: StreamItem) -> list[Delta]:
        deltas: list[Delta] = []
        ids = () if item.token_id is None else (item.token_id,)
        visible = [t for t in ids if self._visible(t)]
        self.outcome.completion_tokens += len(ids)
        if self.decoder is None:
            # An item without an id carries text the engine's decoder held back (its final flush).
            raw = item.text if visible or (not ids and not self._block) else ""
        else:
            raw = await self.decoder.feed(visible) if visible else ""
        if raw and not self.stops.stopped:
            text = self.stops.feed(raw)
            if text:
                deltas.append(Delta(text=text))
            if self.stops.stopped:
                self.outcome.finish_reason = "stop"
        event = item.event
        if isinstance(event, ToolCallEvent):
            deltas.append(Delta(tool={"type": "python_call", "code": event.code}))
        elif isinstance(event, ToolResultEvent):
            deltas.append(Delta(tool={"type": "python_output", **event.model_dump(exclude={"kind"})}))
        elif isinstance(event, FinishEvent | ErrorEvent):
            deltas.extend(await self._end(event))
        return deltas

    @property
    def done(self) -> bool:
        return self.outcome.finish_reason is not None

    async def close(self) -> None:
        """End early (a stop string matched, the client left): release the decoder."""
        if not self._closed:
            self._closed = True
            if self.decoder is not None:
                await self.decoder.close()

    async def _end(self, event: FinishEvent | ErrorEvent) -> list[Delta]:
        self._closed = True
        tail = self.stops.feed(await self.decoder.close()) if self.decoder is not None else ""
        tail += self.stops.flush()
        if isinstance(event, ErrorEvent):
            self.outcome.error = event.error.message
            self.outcome.finish_reason = "error"
        else:
            self.outcome.prompt_tokens = event.usage.prompt_tokens
            self.outcome.completion_tokens = event.usage.completion_tokens
            if self.outcome.finish_reason is None:
                self.outcome.finish_reason = "length" if event.finish_reason == "length" else "stop"
        return [Delta(text=tail)] if tail else []

    def _visible(self, token: int) -> bool:
        if token in self._specials:
            if token in self._opens:
                self._block = self._opens[token]
            elif token in self._closes:
                self._block = ""
            return False
        return not self._block
