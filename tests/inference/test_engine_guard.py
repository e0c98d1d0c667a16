"""One request's failure ends that request alone: an internal error event, its blocks freed, and the
rest of the batch token for token what it would have been without it.

The failures are real ones reached through public seams: a model (a real GPT with a stand-in
`forward`) that yields a NaN or infinite logits row, or an id the tokenizer does not have, for any
sequence that reaches a given position; and a `ToolExecutor` that breaks its contract. Nothing
inside the engine is patched.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import torch
from inference_svc.config import EngineConfig
from inference_svc.engine import AsyncEngine, LLMEngine

from chatforge.contracts.errors import ErrorKind
from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPT, GPTConfig
from chatforge.tools import ToolLimits, ToolResult

from .conftest import make_tiny_model, reference
from .test_engine_correctness import assert_no_leak, run_all, tokens
from .test_tool_loop import setup

BREAK_AT = 44  # the position from which the stand-in breaks a sequence's logits row


class BrokenRowsGPT(GPT):
    """The real weights; a sequence at position >= `from_position` gets `row` as its logits.

    The engine hands the forward the positions of the rows it samples, so the stand-in needs no
    knowledge of requests: a request whose prompt is long enough is the only one that breaks.
    """

    def __init__(self, base: GPT, row: torch.Tensor, from_position: int = BREAK_AT):
        super().__init__(base.config)
        self.load_state_dict(base.state_dict())
        self.row, self.from_position = row, from_position
        self.eval()

    def forward(self, idx, targets=None, *, positions=None, logits_rows=None, **kwargs):  # type: ignore[no-untyped-def, override]
        logits = super().forward(idx, targets, positions=positions, logits_rows=logits_rows, **kwargs)
        pos = positions[0] if logits_rows is None else positions[0, logits_rows]
        logits[0, pos >= self.from_position] = self.row.to(logits.dtype)
        return logits


def nan_row(vocab: int) -> torch.Tensor:
    return torch.full((vocab,), float("nan"))


def inf_row(vocab: int) -> torch.Tensor:
    row = torch.zeros(vocab)
    row[[3, 7]] = float("inf")  # softmax of two infinities is NaN: torch.multinomial refuses it
    return row


def good_requests(seed: int = 0) -> tuple[list[list[int]], list[SamplingParams]]:
    """Greedy and seeded requests that stay below BREAK_AT (prompt + output <= 35 positions)."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(300) for _ in range(rng.randint(1, 20))] for _ in range(6)]
    sampling = [SamplingParams(temperature=0.0, max_tokens=15) for _ in range(4)]
    sampling += [SamplingParams(temperature=0.9, top_k=40, seed=s, max_tokens=15) for s in (1, 2)]
    return prompts, sampling


@pytest.mark.parametrize(
    ("row", "temperature"),
    [(nan_row, 0.0), (nan_row, 0.9), (inf_row, 0.9)],
    ids=["nan-greedy", "nan-sampled", "inf-sampled"],
)
def test_a_row_that_cannot_be_sampled_ends_only_its_request(tiny_model, row, temperature):
    prompts, sampling = good_requests()
    alone = run_all(LLMEngine(tiny_model, EngineConfig(num_blocks=64)), prompts, sampling)

    engine = LLMEngine(BrokenRowsGPT(tiny_model, row(300)), EngineConfig(num_blocks=64))
    bad_prompt = list(range(100, 140))  # 40 tokens: positions 40..43 decode, 44 breaks
    bad = SamplingParams(temperature=temperature, seed=5, max_tokens=30)
    outs = run_all(engine, [prompts[0], bad_prompt, *prompts[1:]], [sampling[0], bad, *sampling[1:]])
    bad_items, good = outs[1], [outs[0], *outs[2:]]

    # The bad request streamed its tokens up to the broken position, then one internal error.
    assert len(tokens(bad_items)) == BREAK_AT - len(bad_prompt) + 1
    if temperature == 0.0:
        assert tokens(bad_items) == reference(tiny_model, bad_prompt, 5)
    last = bad_items[-1].event
    assert last.kind == "error" and last.error.kind == ErrorKind.INTERNAL
    assert "NaN" in last.error.message or "sampling failed" in last.error.message
    assert not any(x.event and x.event.kind == "finish" for x in bad_items)
    # Nothing was lost for the others: the same tokens, the same finish, as without the bad request.
    for with_bad, without in zip(good, alone, strict=True):
        assert tokens(with_bad) == tokens(without)
        assert with_bad[-1].event == without[-1].event
    for prompt, p, items in zip(prompts[:4], sampling[:4], good[:4], strict=True):
        assert tokens(items) == reference(tiny_model, prompt, p.max_tokens)
    assert engine.metrics.requests_finished.labels("error")._value.get() == 1
    assert_no_leak(engine)  # the failed request's blocks are back in the pool


def test_a_token_the_tokenizer_cannot_decode_ends_only_its_request(tiny_tokenizer):
    # A checkpoint paired with a smaller tokenizer: the model can emit ids the tokenizer lacks.
    config = GPTConfig(vocab_size=600, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256)
    base = make_tiny_model(config)
    unknown = torch.full((600,), -5.0)
    unknown[550] = 5.0  # beyond tiny_tokenizer's 512 ids
    model = BrokenRowsGPT(base, unknown)
    prompts = [tiny_tokenizer.encode(t) for t in ("the cat and the dog", "numbers 12345", "a river")]
    sampling = [SamplingParams(temperature=0.0, max_tokens=12, stop=("zzz",)) for _ in prompts]
    alone = run_all(LLMEngine(base, EngineConfig(num_blocks=64), tokenizer=tiny_tokenizer), prompts, sampling)

    engine = LLMEngine(model, EngineConfig(num_blocks=64), tokenizer=tiny_tokenizer)
    bad_prompt = tiny_tokenizer.encode("the model learns " * 12)[:BREAK_AT]
    outs = run_all(
        engine, [bad_prompt, *prompts], [SamplingParams(temperature=0.0, max_tokens=20), *sampling]
    )
    last = outs[0][-1].event
    assert last.kind == "error" and last.error.kind == ErrorKind.INTERNAL
    assert "550" in last.error.message  # the tokenizer's own words: id 550 out of range
    for with_bad, without in zip(outs[1:], alone, strict=True):
        assert [(x.token_id, x.text) for x in with_bad] == [(x.token_id, x.text) for x in without]
    assert_no_leak(engine)


class ContractBreakingExecutor:
    """A tool executor whose result has no stdout (a peer that sent `"stdout": null`)."""

    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult:
        return ToolResult.from_dict({"outcome": "ok", "stdout": None, "duration_s": 0.01})


def test_a_tool_result_that_cannot_be_applied_ends_only_its_request(tiny_tokenizer):
    model, prompt, params, _ = setup(tiny_tokenizer)
    others = [[5, 6, 7], [9, 8, 7, 6, 5, 4], [40, 41]]
    plain = [SamplingParams(temperature=0.0, max_tokens=25, tools=False) for _ in others]
    alone = run_all(LLMEngine(model, EngineConfig(num_blocks=32)), others, plain)

    engine = LLMEngine(
        model, EngineConfig(num_blocks=32), tokenizer=tiny_tokenizer, tool_executor=ContractBreakingExecutor()
    )
    outs = run_all(engine, [prompt, *others], [params, *plain])
    events = [x.event.kind for x in outs[0] if x.event]
    assert events == ["tool_call", "error"]
    assert outs[0][-1].event.error.kind == ErrorKind.INTERNAL
    assert "tool result" in outs[0][-1].event.error.message
    for with_bad, without in zip(outs[1:], alone, strict=True):
        assert tokens(with_bad) == tokens(without)
    assert_no_leak(engine)


def test_the_async_engine_keeps_serving_after_one_request_fails(tiny_model):
    prompts, sampling = good_requests(seed=3)

    async def main():
        engine = AsyncEngine(LLMEngine(BrokenRowsGPT(tiny_model, nan_row(300)), EngineConfig(num_blocks=64)))
        engine.start()

        async def collect(prompt, p):
            return [item async for item in engine.generate(prompt, p)]

        bad = collect(list(range(50, 95)), SamplingParams(temperature=0.0, max_tokens=30))
        outs = await asyncio.gather(bad, *(collect(p, s) for p, s in zip(prompts, sampling, strict=True)))
        engine.check_health()  # the loop lives on
        after = await collect(prompts[0], sampling[0])  # and serves the next request
        await engine.stop()
        return outs, after

    outs, after = asyncio.run(main())
    assert outs[0][-1].event.kind == "error"
    assert all(items[-1].event.kind == "finish" for items in outs[1:])
    assert tokens(after) == tokens(outs[1]) == reference(tiny_model, prompts[0], 15)
