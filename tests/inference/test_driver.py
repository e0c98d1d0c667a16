"""The engine's synchronous driver and the engine's wait: while every sequence waits for its tool
call, the drivers block on the call (or on a new request) instead of stepping or sleeping."""

from __future__ import annotations

import asyncio
import threading
import time

from inference_svc.config import EngineConfig
from inference_svc.driver import EngineDriver
from inference_svc.engine import AsyncEngine, LLMEngine

from chatforge.contracts.generate import FinishEvent, ToolCallEvent, ToolResultEvent
from chatforge.contracts.sampling import SamplingParams

from .test_tool_loop import SubprocessExecutor, setup


class CountingEngine(LLMEngine):
    """Counts steps; its wait has no timeout, so only a finished call or `wake()` ends it."""

    steps = 0

    def step(self):
        self.steps += 1
        return super().step()

    def wait_for_work(self, timeout_s=None):
        super().wait_for_work(None)


def test_the_driver_blocks_on_a_tool_call_instead_of_stepping(tiny_tokenizer):
    model, prompt, params, answer = setup(tiny_tokenizer)
    gate = threading.Event()
    engine = CountingEngine(model, EngineConfig(num_blocks=16), tokenizer=tiny_tokenizer,
                            tool_executor=SubprocessExecutor(gate))  # fmt: skip
    driver = EngineDriver(engine)
    threading.Timer(0.5, gate.set).start()
    t0 = time.monotonic()
    try:
        items = list(driver.stream(prompt, params))
    finally:
        driver.close()
    assert time.monotonic() - t0 >= 0.5  # the call was held that long ...
    # ... and the engine stepped about once per token, not once per few milliseconds of the wait
    assert engine.steps < len(items) + 10
    assert [type(x.event) for x in items if x.event] == [ToolCallEvent, ToolResultEvent, FinishEvent]
    assert "".join(x.text for x in items) == tiny_tokenizer.decode(answer)
    assert isinstance(items[-1].event, FinishEvent) and items[-1].event.finish_reason == "stop"


def test_a_stream_closed_early_aborts_its_request(tiny_tokenizer, tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=16))
    driver = EngineDriver(engine)
    stream = driver.stream(list(range(1, 20)), SamplingParams(temperature=0.0, max_tokens=50))
    first = [next(stream) for _ in range(3)]
    assert all(x.token_id is not None for x in first)
    stream.close()
    engine.step()  # the abort is drained on the next step
    assert engine.num_unfinished == 0 and engine.pool.num_free_blocks == engine.pool.num_blocks
    # the engine serves the next caller as if nothing happened
    (c,) = driver.generate([[1, 2, 3]], SamplingParams(temperature=0.0, max_tokens=4))
    assert len(c.token_ids) == 4 and c.finish_reason == "length" and all(c.sampled)


def test_async_engine_serves_a_new_request_while_another_waits_for_its_tool(tiny_tokenizer):
    """Request A parks on a tool call held for 10 s; B arrives meanwhile and must finish while A
    still waits. The engine's wait has no timeout here: only the async front's wake ends it early."""
    model, prompt, params, _ = setup(tiny_tokenizer)
    gate = threading.Event()
    backstop = threading.Timer(10, gate.set)  # without the wake, B would wait for A's call
    backstop.start()
    llm = CountingEngine(model, EngineConfig(num_blocks=32), tokenizer=tiny_tokenizer,
                         tool_executor=SubprocessExecutor(gate))  # fmt: skip

    async def main():
        engine = AsyncEngine(llm)
        engine.start()
        a_items, called = [], asyncio.Event()

        async def run_a():
            async for item in engine.generate(prompt, params):
                a_items.append(item)
                if isinstance(item.event, ToolCallEvent):
                    called.set()

        a = asyncio.create_task(run_a())
        await asyncio.wait_for(called.wait(), 20)
        await asyncio.sleep(0.2)  # the loop is now inside the engine's wait
        b = [x async for x in engine.generate([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=4))]
        a_waiting = not gate.is_set() and not a.done()
        gate.set()
        await asyncio.wait_for(a, 20)
        await engine.stop()
        return a_items, b, a_waiting

    a_items, b, a_waiting = asyncio.run(main())
    backstop.cancel()
    assert a_waiting  # B finished while A's call was still held
    assert isinstance(b[-1].event, FinishEvent) and len([x for x in b if x.token_id is not None]) == 4
    assert isinstance(a_items[-1].event, FinishEvent) and a_items[-1].event.finish_reason == "stop"


def test_wait_for_work_returns_at_once_when_there_is_something_to_do(tiny_tokenizer):
    model, prompt, params, _ = setup(tiny_tokenizer)
    gate = threading.Event()
    engine = LLMEngine(model, EngineConfig(num_blocks=32), tokenizer=tiny_tokenizer,
                       tool_executor=SubprocessExecutor(gate))  # fmt: skip
    try:
        t0 = time.monotonic()
        engine.wait_for_work(5.0)  # nothing in flight: nothing to wait for
        engine.add_request(prompt, params)
        while not engine.tools.num_running:
            engine.step()
        engine.step()  # parked on the call: this step computes nothing
        assert engine.last_num_scheduled_tokens == 0
        engine.add_request([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=2))
        engine.wait_for_work(5.0)  # a request is queued: no wait
        assert time.monotonic() - t0 < 4.0
    finally:
        gate.set()
        engine.tools.shutdown()
