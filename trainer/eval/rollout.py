"""Batched generation for evaluation and RL, through the inference engine.

Chat evals and RL rollouts need many completions at once, with the python tool loop on. They get
them from the serving engine (paged KV cache, continuous batching, tool loop), not from a second
generation loop: `EngineGenerator.generate` queues every prompt, steps the engine until all are
done and returns, per prompt, the tokens that followed it and which of them the model sampled.

Tokens the tool loop forced into a sequence (`<|output_start|> result <|output_end|>`) are not
sampled: RL must not train on them. The engine reports each sampled token and each tool result as
a stream event; the forced tokens of a result are the tool loop's encoding of the result text, and
the finish event's completion-token count (sampled + forced) confirms that they were appended (the
engine drops a tool output that would overrun the length limit).

`max_concurrent=1` runs the same engine one request at a time: the reference the benchmark
compares batching against.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chatforge.model import GPT
from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256  # new tokens per completion, forced tool output included
    temperature: float = 0.0
    top_k: int | None = None
    seed: int | None = None  # completion i of a call uses seed + i, so a call is reproducible
    tools: bool = True


@dataclass
class Completion:
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)  # every token after the prompt
    sampled: list[int] = field(default_factory=list)  # 1 where the model sampled token_ids[i], 0 if forced
    text: str = ""  # the visible reply: text outside python blocks, no special tokens
    finish_reason: str = ""
    tool_calls: int = 0


class Generator(Protocol):
    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[Completion]: ...


class EngineGenerator:
    """Completions from the paged inference engine, all prompts in flight together."""

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        *,
        tool_executor: ToolExecutor | None = None,
        max_concurrent: int = 64,
        max_batched_tokens: int = 2048,
    ):
        from inference_svc.config import EngineConfig
        from inference_svc.engine import LLMEngine

        self.tokenizer = tokenizer
        self.stop_ids = (tokenizer.special_id("<|assistant_end|>"), tokenizer.bos_id)
        self.max_concurrent = max_concurrent
        config = EngineConfig(
            max_num_seqs=max_concurrent,
            max_num_batched_tokens=max(max_batched_tokens, model.config.sequence_len),
            tool_workers=4,
        )
        self.engine = LLMEngine(model, config, tokenizer=tokenizer, tool_executor=tool_executor)

    def weights_changed(self) -> None:
        """Call after an optimizer step: cached prefixes were computed with the old weights."""
        self.engine.reset_prefix_cache()

    def close(self) -> None:
        if self.engine.tools is not None:
            self.engine.tools.shutdown()

    def generate(self, prompts: Sequence[list[int]], params: GenerationParams) -> list[Completion]:
        from inference_svc.sampling import SamplingParams

        completions = [Completion(list(p)) for p in prompts]
        pending = deque(range(len(prompts)))
        active: dict[str, int] = {}
        while pending or active:
            while pending and len(active) < self.max_concurrent:
                i = pending.popleft()
                sampling = SamplingParams(
                    max_tokens=params.max_tokens,
                    temperature=params.temperature,
                    top_k=params.top_k,
                    seed=None if params.seed is None else params.seed + i,
                    stop_token_ids=self.stop_ids,
                    tools=params.tools,
                )
                active[self.engine.add_request(list(prompts[i]), sampling)] = i
            outputs = self.engine.step()
            if not outputs and not self.engine.scheduler.has_work():
                time.sleep(0.002)  # only tool calls in flight: wait for them without spinning a core
            for request_id, items in outputs.items():
                c = completions[active[request_id]]
                for item in items:
                    if item.token_id is not None:
                        c.token_ids.append(item.token_id)
                        c.sampled.append(1)
                        c.text += item.text
                    elif item.text:
                        c.text += item.text
                    if item.event is None:
                        continue
                    if item.event.kind == "tool_call":
                        c.tool_calls += 1
                    elif item.event.kind == "tool_result":
                        forced = self._forced_ids(item.event.data["output"])
                        c.token_ids.extend(forced)
                        c.sampled.extend([0] * len(forced))
                    elif item.event.kind in ("finish", "error"):
                        c.finish_reason = item.event.data.get("finish_reason", "error")
                        _drop_unappended_output(c, item.event.data.get("usage", {}))
                        del active[request_id]
        return completions

    def _forced_ids(self, output: str) -> list[int]:
        tok = self.tokenizer
        return [tok.special_id("<|output_start|>"), *tok.encode(output), tok.special_id("<|output_end|>")]


def _drop_unappended_output(c: Completion, usage: dict[str, int]) -> None:
    """A tool output the engine refused (over the length limit) is the last forced run: drop it."""
    expected = usage.get("completion_tokens")
    if expected is None or expected == len(c.token_ids):
        return
    while c.sampled and c.sampled[-1] == 0 and len(c.token_ids) > expected:
        c.token_ids.pop()
        c.sampled.pop()
