"""One chat completion: n choices generated concurrently, merged into one stream of events.

`CompletionRun.events()` yields `(choice index, Delta)` while text arrives and
`(choice index, Outcome)` when a choice ends. Errors the inference service raises before its first
piece (a prompt it refuses, no capacity) surface from `start()`, before any response is sent, so they
become proper HTTP statuses; later ones end the choice with finish_reason "error".
Closing the run (`aclose`) cancels every choice's generation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from chatforge.contracts.sampling import SamplingParams
from gateway.assembler import ChoiceAssembler, Delta, Outcome, StopScanner
from gateway.codec import TextCodec
from gateway.inference import InferenceClient


@dataclass(frozen=True)
class CompletionPlan:
    prompt_ids: list[int]
    sampling: SamplingParams
    stops: list[str]
    n: int
    engine_text: bool = False  # take the engine's detokenized text instead of the tokenizer service's


class CompletionRun:
    def __init__(self, inference: InferenceClient, codec: TextCodec, plan: CompletionPlan):
        self.inference = inference
        self.codec = codec
        self.plan = plan
        self._queue: asyncio.Queue[tuple[int, Delta | Outcome]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._started: list[asyncio.Future[None]] = []

    async def start(self) -> None:
        """Start every choice; raises what a choice raised before producing anything."""
        loop = asyncio.get_running_loop()
        for i in range(self.plan.n):
            sampling = self.plan.sampling
            if sampling.seed is not None and i:
                sampling = sampling.with_(seed=sampling.seed + i)  # n samples, each reproducible
            self._started.append(loop.create_future())
            self._tasks.append(asyncio.create_task(self._choice(i, sampling)))
        try:
            for started in self._started:
                await started
        except BaseException:
            await self.aclose()
            raise

    async def events(self) -> AsyncIterator[tuple[int, Delta | Outcome]]:
        finished = 0
        while finished < self.plan.n:
            index, item = await self._queue.get()
            finished += isinstance(item, Outcome)
            yield index, item

    @property
    def pending(self) -> int:
        """Events ready to read without waiting."""
        return self._queue.qsize()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _choice(self, index: int, sampling: SamplingParams) -> None:
        decoder = None if self.plan.engine_text else self.codec.decoder()
        assembler = ChoiceAssembler(self.codec.special_ids, decoder, StopScanner(self.plan.stops))
        stream = self.inference.generate(self.plan.prompt_ids, sampling)
        started = self._started[index]
        try:
            async for item in stream:
                if not started.done():
                    started.set_result(None)
                for delta in await assembler.feed(item):
                    self._queue.put_nowait((index, delta))
                if assembler.done:
                    break
            if not assembler.done:
                assembler.outcome.finish_reason = "error"
                assembler.outcome.error = "the inference stream ended without a finish event"
            self._queue.put_nowait((index, assembler.outcome))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure must reach the reader as data
            if not started.done():
                started.set_exception(e)
            else:
                self._queue.put_nowait((index, Outcome(finish_reason="error", error=str(e))))
        finally:
            if not started.done():
                started.set_result(None)  # ended before any piece: the Outcome says how
            await stream.aclose()
            with contextlib.suppress(Exception):
                await assembler.close()
