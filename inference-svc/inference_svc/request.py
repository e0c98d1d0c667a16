"""One generation request as the scheduler and engine see it: token ids and progress, no text."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from chatforge.contracts.sampling import SamplingParams


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # not yet scheduled, or preempted and waiting to be recomputed
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    arrival_s: float = field(default_factory=time.monotonic)
    # Every token of the sequence: prompt, sampled tokens and forced tool-output tokens.
    token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose keys/values are in the cache
    status: RequestStatus = RequestStatus.WAITING
    finish_reason: str | None = None
    pending_tool: bool = False  # waiting for a tool result: keeps its blocks, skipped by the scheduler
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache at first scheduling
    num_preemptions: int = 0
    generator: Any = None  # the request's torch.Generator (seeded sampling), owned by the engine

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids) :]

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED
