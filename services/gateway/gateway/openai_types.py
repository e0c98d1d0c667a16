"""The chat-completions request as the gateway accepts it, and the response objects it returns.

Field names and defaults follow OpenAI's API so its SDK and other clients work unchanged. Unknown
fields are refused (400 naming the field) rather than silently ignored, except a few that change
nothing here (`user`, and penalties or logprobs left at their defaults). Types are strict: `"2"` is
not 2 and `"yes"` is not true. A bound that an operator sets (`max_messages`, `max_n`, ...) is
declared on its field with `chatforge.request_limits.limit`, checked by the route and published in
the OpenAPI document with the server's own values.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from chatforge.contracts.sampling import MAX_STOP_CHARS, MAX_STOP_STRINGS
from chatforge.contracts.strict import StrictModel
from chatforge.request_limits import limit

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
# OpenAI takes one stop string or a list of them; one is read as a list of one, so a refusal names
# the list's problem (too many, which one is too long) rather than each union member's.
Stops = Annotated[
    list[StopString],
    Field(max_length=MAX_STOP_STRINGS),
    BeforeValidator(
        lambda v: [v] if isinstance(v, str) else v, json_schema_input_type=StopString | list[StopString]
    ),
]


class ContentPart(StrictModel):
    """A part of a message: OpenAI's text part, or chatforge's python call and its output."""

    type: Literal["text", "python", "python_output"] = Field(
        default="text", description="python and python_output: in assistant messages only (chatforge)"
    )
    text: str = Field(json_schema_extra=limit(maxLength=("max_message_chars", "message_too_long")))


class ChatMessage(StrictModel):
    # "developer" is OpenAI's newer name for "system".
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] = Field(
        json_schema_extra=limit(
            maxLength=("max_message_chars", "message_too_long"),
            maxItems=("max_parts_per_message", "too_many_parts"),
        )
    )
    name: str | None = Field(default=None, max_length=64)

    def to_chatforge(self) -> dict[str, Any]:
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return {"role": role, "content": self.content}
        return {"role": role, "content": [{"type": p.type, "text": p.text} for p in self.content]}

    @property
    def chars(self) -> int:
        if isinstance(self.content, str):
            return len(self.content)
        return sum(len(p.text) for p in self.content)


class StreamOptions(StrictModel):
    include_usage: bool = False


class ChatCompletionRequest(StrictModel):
    # `stream_options` needs `stream: true`: said in the schema too, so a client can know it.
    model_config = ConfigDict(
        json_schema_extra={
            "dependentSchemas": {
                "stream_options": {"required": ["stream"], "properties": {"stream": {"const": True}}}
            }
        },
    )

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(
        min_length=1, json_schema_extra=limit(maxItems=("max_messages", "too_many_messages"))
    )
    # Sampling: an omitted field takes chatforge's one default (chatforge.contracts.sampling).
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, description="chatforge (and vLLM) extension; 0 = all")
    max_tokens: int | None = Field(
        default=None, ge=1, json_schema_extra=limit(maximum=("max_tokens_limit", "max_tokens_too_large"))
    )
    max_completion_tokens: int | None = Field(
        default=None, ge=1, json_schema_extra=limit(maximum=("max_tokens_limit", "max_tokens_too_large"))
    )
    n: int = Field(default=1, ge=1, le=128, json_schema_extra=limit(maximum=("max_n", "n_too_large")))
    stop: Stops | None = None
    # JSON's safe integers (a JavaScript client's Number): every one is exact as a double too.
    seed: int | None = Field(default=None, ge=-(2**53 - 1), le=2**53 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    # Accepted at their neutral values only: the engine has no penalties or logprobs.
    presence_penalty: float = Field(default=0.0, ge=0, le=0)
    frequency_penalty: float = Field(default=0.0, ge=0, le=0)
    logprobs: Literal[False] = Field(default=False, description="not supported: false only")
    # chatforge: run python tool calls (the model's <|python_start|> blocks) in the sandbox
    tools_enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            if self.max_tokens != self.max_completion_tokens:
                raise PydanticCustomError(
                    "conflicting_max_tokens",
                    "give max_tokens or max_completion_tokens, not two different values",
                    {"code": "conflicting_max_tokens"},
                )
        if self.stream_options is not None and not self.stream:
            raise PydanticCustomError(
                "stream_options_without_stream",
                "stream_options is only allowed with stream: true",
                {"code": "stream_options_without_stream"},
            )
        return self

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        return list(self.stop or [])


def completion_id() -> str:
    import secrets

    return "chatcmpl-" + secrets.token_hex(12)


def now_s() -> int:
    return int(time.time())


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
