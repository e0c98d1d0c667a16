"""The synchronous driver of the engine: many prompts to completions, or one prompt as a stream.

The chat CLI, the chat evaluations and RL rollouts run the engine in their own process, on the
calling thread. `EngineDriver.generate` queues the prompts (up to `max_in_flight` at once, the
rest as slots free up), steps the engine until every one has finished and returns a `Completion`
per prompt; `stream` yields one prompt's stream items as they come. After each step the engine's
`wait_for_work` blocks while every sequence waits for its tool call, so no driver sleeps or spins.
The Ray Serve app drives the same engine through the async front beside it (`AsyncEngine`).

A completion keeps which of its tokens the model sampled: the tool loop forces
`<|output_start|> output <|output_end|>` into a sequence after a `tool_result` event, and the
engine marks those stream items `forced` (all of them or, when they would overrun the length
limit, none: the request then finishes). RL must not train on them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from chatforge.contracts.generate import ErrorEvent, FinishEvent, StreamItem, ToolCallEvent
from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPT
from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor
from inference_svc.config import EngineConfig
from inference_svc.engine import LLMEngine


@dataclass
class Completion:
    """What followed one prompt."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)  # every token after the prompt, forced ones too
    sampled: list[int] = field(default_factory=list)  # 1 where the model sampled token_ids[i], 0 if forced
    text: str = ""  # the visible reply: text outside python blocks, no special tokens
    finish_reason: str = ""  # stop, length, abort or error
    tool_calls: int = 0

    def add(self, item: StreamItem) -> None:
        if item.token_id is not None:
            self.token_ids.append(item.token_id)
            self.sampled.append(0 if item.forced else 1)
        self.text += item.text
        if isinstance(item.event, ToolCallEvent):
            self.tool_calls += 1
        elif isinstance(item.event, FinishEvent):
            self.finish_reason = item.event.finish_reason
        elif isinstance(item.event, ErrorEvent):
            self.finish_reason = "error"


class EngineDriver:
    """Runs an `LLMEngine` to completion on the calling thread; one caller at a time."""

    def __init__(self, engine: LLMEngine, *, max_in_flight: int | None = None):
        self.engine = engine
        self.max_in_flight = max_in_flight or engine.config.max_num_seqs

    @classmethod
    def for_model(
        cls,
        model: GPT,
        tokenizer: Tokenizer,
        *,
        tool_executor: ToolExecutor | None = None,
        max_in_flight: int = 64,
        max_batched_tokens: int = 2048,
    ) -> EngineDriver:
        """An engine for batch generation (evaluations, RL): `max_in_flight` sequences at once, and
        steps big enough to prefill a whole prompt of the model's context in one."""
        config = EngineConfig(
            max_num_seqs=max_in_flight,
            max_num_batched_tokens=max(max_batched_tokens, model.config.sequence_len),
        )
        engine = LLMEngine(model, config, tokenizer=tokenizer, tool_executor=tool_executor)
        return cls(engine, max_in_flight=max_in_flight)

    def generate(self, prompts: Sequence[list[int]], sampling: SamplingParams) -> list[Completion]:
        """A completion per prompt, in order. With `sampling.seed` set, completion i is drawn with
        seed + i: the call is reproducible and its samples still differ from each other."""
        completions = [Completion(list(p)) for p in prompts]
        for i, item in self._drive(prompts, sampling):
            completions[i].add(item)
        return completions

    def stream(self, prompt_ids: list[int], sampling: SamplingParams) -> Iterator[StreamItem]:
        """One prompt's stream items as the engine makes them; closing the iterator early aborts it."""
        for _, item in self._drive([prompt_ids], sampling):
            yield item

    def weights_changed(self) -> None:
        """Call after an optimizer step: the cached prefixes were computed with the old weights."""
        self.engine.reset_prefix_cache()

    def close(self) -> None:
        if self.engine.tools is not None:
            self.engine.tools.shutdown()

    def _drive(
        self, prompts: Sequence[list[int]], sampling: SamplingParams
    ) -> Iterator[tuple[int, StreamItem]]:
        """(prompt index, item) for every item of every prompt, until the last one has finished."""
        pending = deque(range(len(prompts)))
        active: dict[str, int] = {}  # request id -> prompt index
        try:
            while pending or active:
                while pending and len(active) < self.max_in_flight:
                    i = pending.popleft()
                    seeded = sampling if sampling.seed is None else sampling.with_(seed=sampling.seed + i)
                    active[self.engine.add_request(list(prompts[i]), seeded)] = i
                for request_id, items in self.engine.step().items():
                    if request_id not in active:  # one an earlier caller abandoned, ending now
                        continue
                    i = active[request_id]
                    for item in items:
                        yield i, item
                        if item.is_last:
                            del active[request_id]
                self.engine.wait_for_work()
        finally:
            for request_id in active:  # the caller stopped early (or a prompt was refused)
                self.engine.abort(request_id)
