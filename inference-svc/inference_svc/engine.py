"""The engine: step = schedule -> execute -> update, and an async streaming front on top.

`LLMEngine` is synchronous and single-threaded: requests and aborts go into an inbox (any thread may
post), and `step()` drains it, schedules, runs the model once, samples, applies the stop rules,
detokenizes and returns the stream items per request. What belongs to one request (its sampled row,
its detokenizing and stop strings, its tool call's bookkeeping) is guarded per request: a failure
there ends that request with an internal error event and frees its blocks, and the rest of the batch
goes on exactly as without it. Only a failure of the step itself (the forward pass) ends everyone. `AsyncEngine` runs that loop on a worker
thread and hands each caller an async stream; a caller that stops listening aborts its request,
which frees its blocks on the very next step.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from chatforge.contracts.errors import ErrorDetail, ErrorKind
from chatforge.contracts.generate import (
    ErrorEvent,
    FinishEvent,
    FinishReason,
    StreamItem,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)
from chatforge.contracts.sampling import SamplingParams
from chatforge.detokenize import StreamDecoder
from chatforge.model import GPT
from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor
from inference_svc.block_pool import BlockPool
from inference_svc.config import EngineConfig
from inference_svc.kv_cache_manager import KVCacheManager
from inference_svc.metrics import EngineMetrics
from inference_svc.model_runner import ModelRunner
from inference_svc.paged_attention import KVCache
from inference_svc.request import Request
from inference_svc.sampling import SamplingError, StopStrings, make_generator, sample
from inference_svc.scheduler import RequestUpdate, Scheduler
from inference_svc.tool_loop import ToolLoop, ToolOutcome

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """The engine cannot serve (stopped, or its loop died)."""


@dataclass
class _Track:
    """Per-request output state: text decoding, stop strings and timing."""

    request: Request
    decoder: StreamDecoder | None
    stops: StopStrings
    first_token_s: float | None = None
    last_token_s: float | None = None
    items: list[StreamItem] = field(default_factory=list)


class LLMEngine:
    def __init__(
        self,
        model: GPT,
        config: EngineConfig | None = None,
        *,
        tokenizer: Tokenizer | None = None,
        tool_executor: ToolExecutor | None = None,
        metrics: EngineMetrics | None = None,
    ):
        self.config = config or EngineConfig()
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.metrics = metrics or EngineMetrics()
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        mc = model.config
        self.max_model_len = self.config.max_model_len or mc.sequence_len
        num_blocks = kv_cache_blocks(self.config, model, self.device)
        self.cache = KVCache(
            num_layers=mc.n_layer,
            num_blocks=num_blocks,
            block_size=self.config.block_size,
            n_kv_head=mc.n_kv_head,
            head_dim=mc.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        self.pool = BlockPool(num_blocks, enable_caching=self.config.enable_prefix_caching)
        self.kv = KVCacheManager(self.pool, self.config.block_size)
        self.scheduler = Scheduler(
            self.kv,
            max_num_batched_tokens=self.config.max_num_batched_tokens,
            max_num_seqs=self.config.max_num_seqs,
            max_model_len=self.max_model_len,
        )
        self.runner = ModelRunner(model, self.cache, attention=self.config.attention)
        self.tools = (
            ToolLoop(
                tool_executor,
                tokenizer,
                workers=self.config.tool_workers,
                timeout_s=self.config.tool_timeout_s,
            )
            if tool_executor is not None and tokenizer is not None
            else None
        )
        self._tracks: dict[str, _Track] = {}
        self._inbox: list[Request | str] = []  # new requests and ids to abort, from any thread
        self._inbox_lock = threading.Lock()
        self.last_num_scheduled_tokens = 0  # tokens the last step computed (0: it only waited)
        self._finished_items: dict[str, list[StreamItem]] = {}  # items of requests that ended this step
        self._ids = itertools.count()
        self._seen = {"preemptions": 0, "queries": 0, "hits": 0}
        log.info(
            "KV cache: %d blocks x %d tokens = %d tokens, %.1f MiB, attention %s",
            num_blocks,
            self.config.block_size,
            num_blocks * self.config.block_size,
            self.cache.nbytes / 2**20,
            self.runner.backend.name,
        )

    # --- requests ----------------------------------------------------------------------------------
    def add_request(
        self, prompt_ids: list[int], sampling: SamplingParams | None = None, request_id: str | None = None
    ) -> str:
        """Validate and queue a request (thread-safe); it joins the batch at the next step."""
        sampling = sampling or SamplingParams()
        vocab = self.model.config.vocab_size
        if not prompt_ids:
            raise ValueError("prompt_ids is empty: a request needs at least one token")
        bad = next((t for t in prompt_ids if not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"prompt token {bad!r} is not an id in [0, {vocab})")
        if sampling.stop and self.tokenizer is None:
            raise ValueError("stop strings need an engine with a tokenizer")
        request_id = request_id or f"req-{next(self._ids)}"
        request = Request(request_id, list(prompt_ids), sampling)
        request.generator = make_generator(sampling, self.device)
        self.scheduler.check_request(request)  # RequestTooLong now, in the caller's thread
        with self._inbox_lock:
            queued = any(isinstance(e, Request) and e.request_id == request_id for e in self._inbox)
            if queued or request_id in self._tracks:
                raise ValueError(f"request id {request_id!r} is already in use")
            self._inbox.append(request)
        return request_id

    def abort(self, request_id: str) -> None:
        """End a request at the next step and free its blocks (thread-safe)."""
        with self._inbox_lock:
            self._inbox.append(request_id)

    def has_work(self) -> bool:
        with self._inbox_lock:
            if self._inbox:
                return True
        return self.scheduler.has_work() or (self.tools is not None and self.tools.num_running > 0)

    @property
    def num_unfinished(self) -> int:
        return len(self._tracks)

    def wait_for_work(self, timeout_s: float | None = 1.0) -> None:
        """After a step that computed nothing, block until the next one can: every unfinished
        request is parked on a tool call (or waits for blocks such a request holds), so nothing
        changes until a call finishes, a request or abort arrives (then `wake()` ends the wait:
        this engine cannot see another thread's `add_request` coming) or `timeout_s` passes.
        Returns at once after a step that computed something, or with no tool call running.

        Every driver of the engine calls it after each step instead of sleeping
        (`inference_svc.driver`, `AsyncEngine`): no spinning, and no latency added to a tool call.
        """
        if self.last_num_scheduled_tokens or self.tools is None or not self.tools.num_running:
            return

        def inbox_has_entries() -> bool:
            with self._inbox_lock:
                return bool(self._inbox)

        self.tools.wait(timeout_s, ready=inbox_has_entries)

    def wake(self) -> None:
        """End a `wait_for_work` in another thread now (thread-safe)."""
        if self.tools is not None:
            self.tools.wake()

    # --- one step ----------------------------------------------------------------------------------
    def step(self) -> dict[str, list[StreamItem]]:
        """Run one scheduling round; returns the new stream items of every request that has some."""
        self._drain_inbox()
        self._collect_tool_results()
        output = self.scheduler.schedule()
        self.last_num_scheduled_tokens = output.num_batched_tokens
        if not output.is_empty:
            request_ids, logits = self.runner.execute(output)
            requests = [self.scheduler.requests[r] for r in request_ids]
            tokens = sample(logits, [r.sampling for r in requests], [r.generator for r in requests])
            sampled: dict[str, int] = {}
            for request_id, token in zip(request_ids, tokens, strict=True):
                if isinstance(token, SamplingError):
                    self._fail(request_id, str(token))
                else:
                    sampled[request_id] = token
            updates = self.scheduler.update_from_output(output, sampled)
            now = time.monotonic()
            generated = 0
            for update in updates:
                try:
                    generated += self._on_token(update, now)
                except Exception as e:  # detokenizing, stop strings, tool bookkeeping: this request's own
                    log.exception(
                        "request %s failed after a token; ending it alone", update.request.request_id
                    )
                    self._fail(update.request.request_id, f"the engine failed on this request: {e!r}")
            if generated:  # one counter update per step, not per token
                self.metrics.generation_tokens.inc(generated)
        self._update_gauges()
        return self._take_items()

    def abort_all(self, message: str) -> dict[str, list[StreamItem]]:
        """End every request, queued ones included, with an error event (engine stopping or failed)."""
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        queued = [e.request_id for e in inbox if isinstance(e, Request)]
        out = self._take_items()
        for request_id in queued + list(self._tracks):
            self.scheduler.finish_request(request_id, "error")
            if self.tools is not None:
                self.tools.forget(request_id)
            self._tracks.pop(request_id, None)
            error = ErrorEvent(error=ErrorDetail(kind=ErrorKind.UNAVAILABLE, message=message))
            out.setdefault(request_id, []).append(StreamItem(event=error))
        return out

    def reset_prefix_cache(self) -> None:
        self.pool.reset_prefix_cache()

    # --- helpers -----------------------------------------------------------------------------------
    def _drain_inbox(self) -> None:
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        for entry in inbox:
            if isinstance(entry, Request):
                self.scheduler.add_request(entry)
                self._tracks[entry.request_id] = _Track(
                    entry,
                    StreamDecoder(self.tokenizer) if self.tokenizer is not None else None,
                    StopStrings(entry.sampling.stop),
                )
                self.metrics.prompt_tokens.inc(entry.num_prompt_tokens)
            elif entry in self._tracks:
                self.scheduler.finish_request(entry, "abort")
                self.metrics.requests_finished.labels("abort").inc()
                self._forget(entry)

    def _on_token(self, update: RequestUpdate, now: float) -> int:
        """Stream one sampled token; returns how many tokens it generated (0 or 1)."""
        request, token = update.request, update.new_token_id
        track = self._tracks.get(request.request_id)
        if track is None or token is None:
            return 0
        if track.first_token_s is None:
            track.first_token_s = now
            self.metrics.time_to_first_token.observe(now - request.arrival_s)
        elif track.last_token_s is not None:
            self.metrics.inter_token_latency.observe(now - track.last_token_s)
        track.last_token_s = now
        reason = update.finish_reason
        # A stop id ends the text: like vLLM, its own text is not part of the answer.
        text = "" if reason == "stop" else self._visible_text(track, token)
        stopped = False
        if text:
            text, stopped = track.stops.feed(text)
        track.items.append(StreamItem(token_id=token, text=text))
        if stopped and reason is None:
            self.scheduler.finish_request(request.request_id, "stop")
            reason = "stop"
        if reason is None and self.tools is not None and request.sampling.tools:
            call = self.tools.on_token(request.request_id, request.token_ids)
            if call is not None:
                request.pending_tool = True
                track.items.append(StreamItem(event=ToolCallEvent(code=call.code)))
        if reason is not None:
            self._finish(track, reason)
        return 1

    def _visible_text(self, track: _Track, token: int) -> str:
        """Text of ordinary tokens outside python blocks; specials and tool code carry no text."""
        if track.decoder is None or self.tokenizer is None or self.tokenizer.is_special(token):
            return ""
        if self.tools is not None and self.tools.in_python_block(track.request.request_id):
            return ""
        return track.decoder.feed(token)

    def _collect_tool_results(self) -> None:
        if self.tools is None:
            return
        for outcome in self.tools.done():
            request_id = outcome.call.request_id
            if request_id not in self._tracks:
                continue
            try:
                self._apply_tool_outcome(outcome)
            except Exception as e:
                log.exception("request %s: its tool result could not be applied; ending it alone", request_id)
                self._fail(request_id, f"the engine failed on this request's tool result: {e!r}")

    def _apply_tool_outcome(self, outcome: ToolOutcome) -> None:
        request_id = outcome.call.request_id
        track = self._tracks[request_id]
        if outcome.failure:
            self._fail(request_id, outcome.failure)
            return
        result = outcome.result
        event = ToolResultEvent(
            outcome=result.outcome,
            output=result.model_text(),
            duration_s=round(time.monotonic() - outcome.call.started_s, 4),
            message=result.message,
        )
        track.items.append(StreamItem(event=event))
        reason = self.scheduler.append_forced_tokens(request_id, outcome.forced_token_ids)
        if reason is not None:
            self._finish(track, reason)
            return
        # The forced ids go out on the stream too, so the client's ids match the sequence.
        track.items.extend(StreamItem(token_id=t, forced=True) for t in outcome.forced_token_ids)

    def _fail(self, request_id: str, message: str) -> None:
        """End one request with an internal error event and free its blocks; the batch goes on."""
        self.scheduler.finish_request(request_id, "error")
        track = self._tracks.get(request_id)
        if track is None:  # already ended (its finish event is on its way): nothing left to fail
            return
        log.error("request %s ended with an error: %s", request_id, message)
        if not any(item.is_last for item in track.items):
            error = ErrorDetail(kind=ErrorKind.INTERNAL, message=message)
            track.items.append(StreamItem(event=ErrorEvent(error=error)))
            self.metrics.requests_finished.labels("error").inc()
        self._forget(request_id)

    def _finish(self, track: _Track, reason: FinishReason) -> None:
        request = track.request
        tail = track.stops.flush() if reason != "stop" else ""
        if track.decoder is not None and reason != "stop":
            tail += track.decoder.flush()
        if tail:
            track.items.append(StreamItem(text=tail))
        usage = Usage(
            prompt_tokens=request.num_prompt_tokens,
            completion_tokens=request.num_output_tokens,
            cached_tokens=request.num_cached_tokens,
        )
        track.items.append(StreamItem(event=FinishEvent(finish_reason=reason, usage=usage)))
        self.metrics.requests_finished.labels(reason).inc()
        self.metrics.e2e_latency.observe(time.monotonic() - request.arrival_s)
        self._forget(request.request_id)

    def _forget(self, request_id: str) -> None:
        if self.tools is not None:
            self.tools.forget(request_id)
        track = self._tracks.pop(request_id, None)
        if track is not None and track.items:
            self._finished_items[request_id] = track.items

    def _take_items(self) -> dict[str, list[StreamItem]]:
        out, self._finished_items = self._finished_items, {}
        for request_id, track in self._tracks.items():
            if track.items:
                out[request_id] = track.items
                track.items = []
        return out

    def _update_gauges(self) -> None:
        m, s, kv = self.metrics, self.scheduler, self.kv
        m.requests_running.set(s.num_running)
        m.requests_waiting.set(s.num_waiting)
        m.kv_cache_usage.set(self.pool.usage())
        for key, now in (
            ("preemptions", s.num_preemptions),
            ("queries", kv.prefix_queries),
            ("hits", kv.prefix_hits),
        ):
            delta, self._seen[key] = now - self._seen[key], now
            if delta:
                {"preemptions": m.preemptions, "queries": m.prefix_queries, "hits": m.prefix_hits}[key].inc(
                    delta
                )


def kv_cache_blocks(config: EngineConfig, model: GPT, device: torch.device) -> int:
    """Pool size in blocks: an explicit count, else a byte budget, else a fraction of free CUDA memory."""
    mc = model.config
    dtype = next(model.parameters()).dtype
    per_block = KVCache.bytes_per_block(
        num_layers=mc.n_layer,
        block_size=config.block_size,
        n_kv_head=mc.n_kv_head,
        head_dim=mc.head_dim,
        dtype=dtype,
    )
    if config.num_blocks is not None:
        return config.num_blocks
    if config.kv_cache_bytes is not None:
        budget, source = config.kv_cache_bytes, "kv_cache_bytes"
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget, source = int(free * config.kv_cache_memory_fraction), "kv_cache_memory_fraction"
    else:
        budget, source = config.default_kv_cache_bytes, "default_kv_cache_bytes"
    blocks = budget // per_block
    if blocks < 1:
        raise ValueError(
            f"{source} gives {budget} bytes, less than one KV block ({per_block} bytes): raise it"
        )
    return blocks


class AsyncEngine:
    """Runs `LLMEngine.step` in a loop on one worker thread and streams items to async callers."""

    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self._queues: dict[str, asyncio.Queue[StreamItem]] = {}
        self._wakeup = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatforge-engine")
        self._task: asyncio.Task[None] | None = None
        self._step_started_s: float | None = None  # set while a step runs: the health check reads it
        self._failure: BaseException | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, message: str = "the engine stopped") -> None:
        """Stop the loop; requests still in flight end with an error event carrying `message`."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._worker.shutdown(wait=True)  # a step still running in the thread finishes first
        self._dispatch(self.engine.abort_all(message))
        if self.engine.tools is not None:
            self.engine.tools.shutdown()

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[StreamItem]:
        """Stream (token id, text delta, event) items; bad input raises before the first item."""
        if self._failure is not None or self._task is None or self._task.done():
            raise EngineError(f"the engine loop is not running ({self._failure or 'not started'})")
        request_id = self.engine.add_request(prompt_ids, sampling, request_id)
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self._queues[request_id] = queue
        self._wakeup.set()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                finished = item.is_last
                yield item
        finally:
            self._queues.pop(request_id, None)
            if not finished:  # the caller went away: free the blocks now, not when generation would end
                self.engine.abort(request_id)
                self._wakeup.set()

    def check_health(self) -> None:
        """Raise when the loop died or a step has been running longer than `stuck_after_s`."""
        if self._failure is not None:
            raise EngineError(f"engine loop failed: {self._failure!r}")
        if self._task is None or self._task.done():
            raise EngineError("engine loop is not running")
        started = self._step_started_s
        limit = self.engine.config.stuck_after_s
        if started is not None and time.monotonic() - started > limit:
            raise EngineError(
                f"engine step running for {time.monotonic() - started:.1f}s (> {limit}s): stuck"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.engine.has_work():
                self._wakeup.clear()
                if not self.engine.has_work():
                    await self._wakeup.wait()
                continue
            self._step_started_s = time.monotonic()
            try:
                outputs = await loop.run_in_executor(self._worker, self.engine.step)
            except Exception as e:  # a failing step must not leave callers waiting forever
                log.exception("engine step failed; ending every request with an error")
                outputs = self.engine.abort_all(f"engine step failed: {e}")
            finally:
                self._step_started_s = None
            self._dispatch(outputs)
            if self.engine.last_num_scheduled_tokens:
                continue
            # Nothing was computed: every request waits on a tool call. The engine's own wait runs on
            # the worker thread; a request or abort arriving meanwhile (`_wakeup`) cuts it short.
            self._wakeup.clear()
            waiting = loop.run_in_executor(self._worker, self.engine.wait_for_work)
            woken = loop.create_task(self._wakeup.wait())
            try:
                await asyncio.wait((waiting, woken), return_when=asyncio.FIRST_COMPLETED)
            finally:
                woken.cancel()
                if not waiting.done():
                    self.engine.wake()

    def _dispatch(self, outputs: dict[str, list[StreamItem]]) -> None:
        for request_id, items in outputs.items():
            queue = self._queues.get(request_id)
            if queue is not None:
                for item in items:
                    queue.put_nowait(item)
