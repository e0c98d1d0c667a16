"""The tool loop: `<|python_start|> code <|python_end|>` in a sequence runs through a ToolExecutor.

The engine reports each new token here. When a python block closes, its code goes to a thread pool
(the executor blocks for up to its timeout: the sandbox service over the network, or a local
isolated process) and the sequence is parked with its blocks kept. Once the result is back, the
engine forces `<|output_start|> result <|output_end|>` into the sequence and the model continues.
The engine depends only on the `chatforge.tools.ToolExecutor` protocol.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor, ToolLimits, ToolResult


@dataclass(frozen=True)
class ToolCall:
    request_id: str
    code: str
    started_s: float


@dataclass(frozen=True)
class ToolOutcome:
    call: ToolCall
    result: ToolResult
    forced_token_ids: list[int]  # <|output_start|> result <|output_end|>
    failure: str = ""  # the result could not be turned into tokens: the engine ends this request alone


class ToolLoop:
    def __init__(self, executor: ToolExecutor, tokenizer: Tokenizer, *, workers: int, timeout_s: float):
        self.executor = executor
        self.tokenizer = tokenizer
        self.limits = ToolLimits(timeout_s=timeout_s)
        self.python_start = tokenizer.special_id("<|python_start|>")
        self.python_end = tokenizer.special_id("<|python_end|>")
        self.output_start = tokenizer.special_id("<|output_start|>")
        self.output_end = tokenizer.special_id("<|output_end|>")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chatforge-tool")
        self._open: dict[str, int] = {}  # request id -> index of its <|python_start|> token
        self._running: dict[str, tuple[ToolCall, Future[ToolResult]]] = {}
        self._changed = threading.Event()  # set when a call finishes, or by wake()

    def on_token(self, request_id: str, token_ids: list[int]) -> ToolCall | None:
        """Called after each sampled token (the last of `token_ids`); starts a call when a block closes."""
        token = token_ids[-1]
        if token == self.python_start:
            self._open[request_id] = len(token_ids) - 1
        elif token == self.python_end and request_id in self._open:
            start = self._open.pop(request_id)
            code = self.tokenizer.decode(token_ids[start + 1 : -1])
            call = ToolCall(request_id, code, time.monotonic())
            future = self._pool.submit(self._run, code)
            future.add_done_callback(lambda _: self._changed.set())
            self._running[request_id] = (call, future)
            return call
        return None

    def in_python_block(self, request_id: str) -> bool:
        return request_id in self._open

    def done(self) -> list[ToolOutcome]:
        """Calls that have finished since the last look, with the tokens to force."""
        out = []
        for request_id, (call, future) in list(self._running.items()):
            if future.done():
                del self._running[request_id]
                result = future.result()
                try:  # an executor that breaks its contract (stdout None, ...) fails its own call only
                    text_ids = self.tokenizer.encode(result.model_text())
                except Exception as e:
                    out.append(ToolOutcome(call, result, [], failure=f"the tool result is unusable: {e!r}"))
                    continue
                out.append(ToolOutcome(call, result, [self.output_start, *text_ids, self.output_end]))
        return out

    @property
    def num_running(self) -> int:
        return len(self._running)

    def wait(self, timeout_s: float | None, ready: Callable[[], bool] = lambda: False) -> None:
        """Block until a running call finishes, `wake()` is called or `timeout_s` passes. Returns at
        once when a call has finished since the last `done()`, or when `ready()` holds: it is asked
        after the wake-up signal is armed, so a `wake()` that follows a False answer is not lost."""
        self._changed.clear()
        if ready() or any(future.done() for _, future in list(self._running.values())):
            return
        self._changed.wait(timeout_s)

    def wake(self) -> None:
        """End a `wait` now (thread-safe): something other than a tool call needs the engine."""
        self._changed.set()

    def forget(self, request_id: str) -> None:
        """The request ended (finished or aborted): drop its state; a running call's result is discarded."""
        self._open.pop(request_id, None)
        entry = self._running.pop(request_id, None)
        if entry is not None:
            entry[1].cancel()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, code: str) -> ToolResult:
        start = time.monotonic()
        try:
            return self.executor.run(code, self.limits)
        except Exception as e:  # the protocol says executors never raise; a broken one must not kill the loop
            return ToolResult(
                "unavailable", duration_s=time.monotonic() - start, message=f"tool executor failed: {e}"
            )
