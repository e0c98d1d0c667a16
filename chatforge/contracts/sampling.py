"""Sampling parameters: one definition, one set of defaults, used from the OpenAI request to the sampler.

A field keeps its name all the way: `temperature` in `POST /v1/chat/completions` is
`SamplingParams.temperature` in the gateway, in the generate request to the inference service, in
the engine's `Request.sampling`, and in `inference_svc.sampling.sample`. The chat CLI, evaluations
and RL rollouts build the same object.

The defaults are what an omitted field means everywhere (docs/contracts.md): temperature 0.8 with
top-k 50, nanochat's chat defaults, because a small model sampled at temperature 1 over its whole
vocabulary wanders. Whoever needs something else says so: evaluations ask for greedy
(`temperature=0`), RL for temperature 1 (exploration), and an OpenAI client for what it sends.
One field is filled in before it gets here: the gateway turns an omitted `max_tokens` into what the
model's context leaves (up to its limit), since only it knows the rendered prompt's length.
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K = 50
DEFAULT_TOP_P = 1.0
MAX_STOP_STRINGS = 4  # OpenAI's limit
MAX_STOP_CHARS = 256
MAX_STOP_TOKEN_IDS = 64


class SamplingParams(BaseModel):
    """How one completion is sampled. Immutable; invalid values raise pydantic's ValidationError
    naming the field (a ValueError)."""

    # Strict scalars: "2" is not 2 and "yes" is not true (a JSON array is still a tuple).
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: StrictInt = Field(DEFAULT_MAX_TOKENS, ge=1, le=1_000_000)  # new tokens, tool output included
    temperature: StrictFloat = Field(DEFAULT_TEMPERATURE, ge=0, le=2)  # 0 = greedy
    top_k: StrictInt | None = Field(DEFAULT_TOP_K, ge=0)  # keep the k likeliest tokens (None or 0: all)
    top_p: StrictFloat = Field(DEFAULT_TOP_P, gt=0, le=1)  # keep the smallest set whose mass reaches top_p
    seed: StrictInt | None = Field(
        None, ge=-(2**63), lt=2**63
    )  # same seed, prompt and weights -> same tokens
    stop_token_ids: tuple[StrictInt, ...] = Field((), max_length=MAX_STOP_TOKEN_IDS)
    stop: tuple[StrictStr, ...] = Field((), max_length=MAX_STOP_STRINGS)  # text stops before the match
    tools: StrictBool = True  # run <|python_start|> ... <|python_end|> through the tool executor

    @field_validator("stop")
    @classmethod
    def _stops(cls, stops: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop string must be 1 to {MAX_STOP_CHARS} characters")
        return stops

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_ids(cls, ids: tuple[int, ...]) -> tuple[int, ...]:
        if any(i < 0 for i in ids):
            raise ValueError("stop token ids must be >= 0")
        return ids

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def with_(self, **changes: object) -> SamplingParams:
        """A copy with `changes`, validated like a new object."""
        return SamplingParams.model_validate({**self.model_dump(), **changes})
