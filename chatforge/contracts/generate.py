"""The inference service's contract: a generate request and the items of its stream.

    GenerateRequest  {"prompt_ids": [...]} or {"messages": [...]}, plus {"sampling": SamplingParams}
    StreamItem       a token (sampled, or forced by the tool loop) with the text it completed,
                     and/or one event: tool_call, tool_result, finish (the last), error (the last)

Over HTTP (the Ray Serve app's `POST /generate`) each item is one NDJSON line; through a Serve handle
or in-process it is the object itself. Errors cross the stream as data (an error event carrying an
`ErrorDetail`, then the end), never as an exception halfway through.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from chatforge.contracts.errors import ErrorDetail
from chatforge.contracts.sampling import SamplingParams
from chatforge.tools import Outcome

FinishReason = Literal["stop", "length", "abort", "error"]
# The Serve app's HTTP port on one machine (the gateway's is 8000): the gateway's default
# inference URL and `chatforge inference serve` both read it here.
DEFAULT_PORT = 8001
MAX_PROMPT_IDS = 1_000_000  # far past any context; bounds what a request can make the service hold


class GenerateRequest(BaseModel):
    """One completion: raw prompt ids, or a chat the service renders primed for the assistant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_ids: list[StrictInt] | None = Field(None, min_length=1, max_length=MAX_PROMPT_IDS)
    messages: list[dict[str, Any]] | None = Field(None, min_length=1)  # chatforge.chat's schema
    sampling: SamplingParams = SamplingParams()

    @model_validator(mode="after")
    def _one_prompt(self) -> GenerateRequest:
        if (self.prompt_ids is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt_ids' or 'messages'")
        return self


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int
    completion_tokens: int  # sampled and forced (tool output) tokens after the prompt
    cached_tokens: int = 0  # prompt tokens served from the prefix cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ToolCallEvent(BaseModel):
    """The model closed a python block; the code goes to the sandbox."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tool_call"] = "tool_call"
    code: str


class ToolResultEvent(BaseModel):
    """The sandbox answered; `output` (what the model sees) follows as forced tokens."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["tool_result"] = "tool_result"
    outcome: Outcome
    output: str
    duration_s: float
    message: str = ""


class FinishEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["finish"] = "finish"
    finish_reason: FinishReason
    usage: Usage


class ErrorEvent(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["error"] = "error"
    error: ErrorDetail


Event = Annotated[ToolCallEvent | ToolResultEvent | FinishEvent | ErrorEvent, Field(discriminator="kind")]


class StreamItem(BaseModel):
    """A new token (with the text it completed, possibly empty) and/or an event."""

    model_config = ConfigDict(frozen=True)

    token_id: int | None = None
    forced: bool = False  # put into the sequence by the tool loop, not sampled by the model
    text: str = ""
    event: Event | None = None

    @property
    def is_last(self) -> bool:
        return isinstance(self.event, FinishEvent | ErrorEvent)

    def to_json(self) -> str:
        """One NDJSON line's content; unset fields are left out (most items are a token and its
        text), an event is written whole (its `kind` tells which it is)."""
        data: dict[str, Any] = {}
        if self.token_id is not None:
            data["token_id"] = self.token_id
        if self.forced:
            data["forced"] = True
        if self.text:
            data["text"] = self.text
        if self.event is not None:
            data["event"] = self.event.model_dump(mode="json")
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | bytes) -> StreamItem:
        return cls.model_validate_json(line)


class ServedModelInfo(BaseModel):
    """What the inference service serves now (`GET /info`, `InferenceServer.info()`)."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer service may say more

    checkpoint: str  # the artifact name, run/stage/step_N (or the directory it was loaded from)
    path: str  # the checkpoint's directory
    step: int | None = None
    tokenizer: str | None = None  # the tokenizer's name, when the service has one
    context_length: int  # prompt + completion tokens, the model's sequence length
    config: dict[str, Any] = {}  # the model's GPTConfig
    attention: str = ""  # the attention backend the engine picked
    kv_cache: dict[str, Any] = {}  # blocks, block size, bytes, usage
    engine: dict[str, Any] = {}  # the engine's configuration
