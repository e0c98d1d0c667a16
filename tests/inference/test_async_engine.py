"""The async streaming front: concurrent streams, cancellation freeing blocks, health, text deltas."""

from __future__ import annotations

import asyncio
import threading

import pytest
from inference_svc.config import EngineConfig
from inference_svc.engine import AsyncEngine, EngineError, LLMEngine

from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPTConfig

from .conftest import make_tiny_model, reference


async def collect(engine: AsyncEngine, prompt, params):
    return [item async for item in engine.generate(prompt, params)]


def test_concurrent_streams_match_the_reference():
    model = make_tiny_model()

    async def main():
        engine = AsyncEngine(LLMEngine(model, EngineConfig(num_blocks=64)))
        engine.start()
        prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], list(range(20, 50))]
        outs = await asyncio.gather(
            *(collect(engine, p, SamplingParams(temperature=0.0, max_tokens=12)) for p in prompts)
        )
        engine.check_health()
        await engine.stop()
        return prompts, outs

    prompts, outs = asyncio.run(main())
    for prompt, items in zip(prompts, outs, strict=True):
        assert [x.token_id for x in items if x.token_id is not None] == reference(model, prompt, 12)
        assert items[-1].event.kind == "finish"


def test_a_client_that_goes_away_frees_its_blocks():
    model = make_tiny_model()

    async def main():
        llm = LLMEngine(model, EngineConfig(num_blocks=64))
        engine = AsyncEngine(llm)
        engine.start()
        stream = engine.generate(list(range(40)), SamplingParams(temperature=0.0, max_tokens=200))
        got = 0
        async for item in stream:
            got += item.token_id is not None
            if got == 3:
                break
        in_use = llm.pool.num_blocks - llm.pool.num_free_blocks
        await stream.aclose()  # what Serve/ASGI do when the HTTP client disconnects
        for _ in range(200):
            if llm.pool.num_free_blocks == llm.pool.num_blocks:
                break
            await asyncio.sleep(0.01)
        free_after = llm.pool.num_free_blocks
        await engine.stop()
        return in_use, free_after, llm

    in_use, free_after, llm = asyncio.run(main())
    assert in_use > 0 and free_after == llm.pool.num_blocks
    assert llm.metrics.requests_finished.labels("abort")._value.get() == 1


def test_stop_strings_cut_the_text_and_detokenize_utf8(tiny_tokenizer):
    tok = tiny_tokenizer
    model = make_tiny_model(GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_embd=64, n_head=4, n_kv_head=2))
    prompt = tok.encode("the model learns")

    async def main(params):
        engine = AsyncEngine(LLMEngine(model, EngineConfig(num_blocks=32), tokenizer=tok))
        engine.start()
        items = await collect(engine, prompt, params)
        await engine.stop()
        return items

    full = asyncio.run(main(SamplingParams(temperature=0.0, max_tokens=30)))
    ids = [x.token_id for x in full if x.token_id is not None]
    text = "".join(x.text for x in full)
    assert text == tok.decode([i for i in ids if not tok.is_special(i)])
    visible = text[2:8]
    cut = asyncio.run(main(SamplingParams(temperature=0.0, max_tokens=30, stop=(visible,))))
    assert "".join(x.text for x in cut) == text[: text.index(visible)]
    assert cut[-1].event.finish_reason == "stop"


def test_health_fails_when_the_loop_is_not_running_or_stuck():
    model = make_tiny_model()
    gate = threading.Event()

    # A forward pass that blocks until released: the engine loop is stuck inside a step.
    def block(module, args):
        gate.wait(10)

    hook = model.register_forward_pre_hook(block)

    async def main():
        engine = AsyncEngine(LLMEngine(model, EngineConfig(num_blocks=8, stuck_after_s=0.2)))
        with pytest.raises(EngineError, match="not running"):
            engine.check_health()
        with pytest.raises(EngineError, match="not running"):
            await collect(engine, [1, 2], SamplingParams(temperature=0.0, max_tokens=2))
        engine.start()
        engine.check_health()
        task = asyncio.create_task(collect(engine, [1, 2], SamplingParams(temperature=0.0, max_tokens=2)))
        await asyncio.sleep(0.5)
        with pytest.raises(EngineError, match="stuck"):
            engine.check_health()
        gate.set()
        items = await task
        engine.check_health()
        await engine.stop()
        return items

    try:
        items = asyncio.run(main())
    finally:
        hook.remove()
    assert items[-1].event.kind == "finish"
