"""The continuous-batching scheduler: who computes which tokens this step.

Each step, running sequences go first, decodes before chunks (a decode is one token; a sequence
still prefilling, or one with forced tool-output tokens, gets a chunk), then waiting ones are
admitted in arrival order, all within one token budget, so a long prompt is prefilled in chunks between other sequences' decodes.
When the pool runs dry the youngest running sequence is preempted: its blocks are freed and it
waits to be recomputed (its full blocks usually survive in the prefix cache, which makes that
cheap). A request that could never fit, even alone in the pool, is refused when it is added.

There is no notion of "prefill" or "decode" state, as in vLLM v1: a request has `token_ids` and
`num_computed_tokens`, and the scheduler closes the gap.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from chatforge.contracts.errors import ServiceError
from inference_svc.kv_cache_manager import KVCacheManager
from inference_svc.request import Request, RequestStatus
from inference_svc.sampling import FinishReason, check_stop


class RequestTooLong(ServiceError, ValueError):
    """A request that exceeds the model's context or could never fit in the KV pool."""


@dataclass(frozen=True)
class ScheduledChunk:
    request_id: str
    token_ids: list[int]  # the tokens to compute this step
    start_pos: int  # position of token_ids[0]; earlier positions are already in the cache
    block_ids: list[int]  # the request's block table after allocation
    sample: bool  # the chunk reaches the last known token, so its logits give a new token


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted_ids: list[str] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.chunks)

    @property
    def is_empty(self) -> bool:
        return not self.chunks


@dataclass(frozen=True)
class RequestUpdate:
    request: Request
    new_token_id: int | None
    finish_reason: FinishReason | None


class Scheduler:
    def __init__(
        self, kv: KVCacheManager, *, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int
    ):
        self.kv = kv
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0

    # --- requests in and out ---------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        """Queue a request; refuses one that could never run instead of letting it wait forever."""
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self.check_request(request)
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def check_request(self, request: Request) -> None:
        """Raise RequestTooLong for a request that exceeds the context or could never fit in the pool."""
        if not request.prompt_token_ids:
            raise ValueError("a request needs at least one prompt token")
        n = request.num_prompt_tokens
        if n >= self.max_model_len:
            raise RequestTooLong(
                ServiceError.context_length(
                    n, self.max_model_len, param="prompt_ids", why="no room left to generate (max_model_len)"
                ).detail
            )
        longest = min(n + request.sampling.max_tokens, self.max_model_len)
        if self.kv.blocks_needed(longest) > self.kv.pool.num_blocks:
            message = (
                f"prompt of {n} tokens plus max_tokens {request.sampling.max_tokens} needs "
                f"{self.kv.blocks_needed(longest)} KV blocks but the pool has {self.kv.pool.num_blocks}: "
                "lower max_tokens or give the KV cache more memory"
            )
            raise RequestTooLong(ServiceError.invalid(message, param="sampling.max_tokens").detail)

    def finish_request(self, request_id: str, reason: FinishReason) -> Request | None:
        """End a request now (stop string, abort, client gone): its blocks return at once."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.kv.free(request)
        request.status, request.finish_reason = RequestStatus.FINISHED, reason
        return request

    def has_work(self) -> bool:
        return bool(self.waiting) or any(not r.pending_tool for r in self.running)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    # --- one step ---------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        scheduled: set[str] = set()

        # Decodes first (one token each, the latency users feel), then the running sequences that
        # still have a chunk to compute (a long prompt, or forced tool output). Both lists are
        # snapshots: preemption removes sequences from `running` as it goes.
        decodes: list[Request] = []
        chunks: list[Request] = []
        for request in self.running:
            if not request.pending_tool:
                (decodes if request.num_tokens - request.num_computed_tokens == 1 else chunks).append(request)
        for request in decodes + chunks:
            if budget <= 0:
                break
            if request.status is not RequestStatus.RUNNING:
                continue  # preempted by one scheduled before it
            n = min(request.num_tokens - request.num_computed_tokens, budget)
            while self.kv.allocate_slots(request, n) is None:
                victim = self._youngest_preemptable(scheduled)
                self._preempt(victim)
                out.preempted_ids.append(victim.request_id)
                if victim is request:
                    break
            if request.status is not RequestStatus.RUNNING:
                continue  # it had to preempt itself
            out.chunks.append(self._chunk(request, n))
            scheduled.add(request.request_id)
            budget -= n

        # New work only when nothing was preempted this step: otherwise it would take the blocks
        # the preempted sequences need to come back.
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not out.preempted_ids:
            request = self.waiting[0]
            cached_blocks, num_cached = self.kv.get_computed_blocks(request)
            n = min(request.num_tokens - num_cached, budget)
            if self.kv.allocate_slots(request, n, cached_blocks) is None:
                break
            self.waiting.popleft()
            request.num_computed_tokens = num_cached
            if request.num_preemptions == 0:
                request.num_cached_tokens = num_cached
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.chunks.append(self._chunk(request, n))
            budget -= n
        return out

    def update_from_output(self, output: SchedulerOutput, sampled: dict[str, int]) -> list[RequestUpdate]:
        """Advance each scheduled request past its chunk, append its sampled token, apply the stop
        rules (stop ids, max_tokens, context length) and free the finished ones."""
        updates = []
        for chunk in output.chunks:
            request = self.requests.get(chunk.request_id)
            if request is None or request.status is not RequestStatus.RUNNING:
                continue  # finished or aborted while the step ran
            request.num_computed_tokens += len(chunk.token_ids)
            token = sampled.get(chunk.request_id)
            if token is None:
                continue
            request.token_ids.append(token)
            reason = check_stop(
                token, request.num_output_tokens, request.num_tokens, request.sampling, self.max_model_len
            )
            if reason is not None:
                self.finish_request(request.request_id, reason)
            updates.append(RequestUpdate(request, token, reason))
        return updates

    def append_forced_tokens(self, request_id: str, token_ids: list[int]) -> FinishReason | None:
        """Tool output joins the sequence as known tokens, computed like a prompt chunk next step.
        Returns "length" (and finishes the request) when they would overrun its limits."""
        request = self.requests[request_id]
        request.pending_tool = False
        room = min(
            request.sampling.max_tokens - request.num_output_tokens, self.max_model_len - request.num_tokens
        )
        # One slot is kept so the model can still answer after reading the output.
        if len(token_ids) >= room:
            self.finish_request(request_id, "length")
            return "length"
        request.token_ids.extend(token_ids)
        return None

    # --- helpers ---------------------------------------------------------------------------------
    def _chunk(self, request: Request, n: int) -> ScheduledChunk:
        start = request.num_computed_tokens
        return ScheduledChunk(
            request_id=request.request_id,
            token_ids=request.token_ids[start : start + n],
            start_pos=start,
            block_ids=self.kv.block_ids(request.request_id),
            sample=start + n == request.num_tokens,
        )

    def _youngest_preemptable(self, scheduled: set[str]) -> Request:
        """The most recently admitted running request not yet scheduled this step and not waiting on
        a tool (a tool-waiting sequence keeps its blocks); the requester itself as a last resort."""
        for request in reversed(self.running):
            if request.request_id not in scheduled and not request.pending_tool:
                return request
        raise RuntimeError("no request can be preempted")  # the requester is always a candidate

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.status = RequestStatus.WAITING
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)
