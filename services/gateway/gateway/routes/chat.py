"""`POST /v1/chat/completions`: OpenAI's chat-completions protocol, non-streamed and streamed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from chatforge.chat import REPLY_ENDS, ConversationTooLong
from chatforge.contracts.errors import ErrorKind, ServiceError
from chatforge.contracts.sampling import SamplingParams
from chatforge.request_limits import first_violation
from gateway.assembler import Delta, Outcome
from gateway.auth import ChatCompletionCaller, Principal
from gateway.codec import CodecUnavailable
from gateway.completions import CompletionPlan, CompletionRun
from gateway.errors import APIError, from_exception
from gateway.inference import InferenceUnavailable, ModelInfo
from gateway.openai_types import ChatCompletionRequest, completion_id, now_s, usage_dict
from gateway.openapi import answers
from gateway.ratelimit import Bucket, refused
from gateway.sse import SSEResponse, event
from gateway.state import GatewayState, State

router = APIRouter(tags=["chat"])


# Refusals that depend on more than one field, or on the model: a schema cannot state them.
CHECKS = (
    "invalid_messages", "context_length_exceeded", "token_budget_exceeded", "message_too_long",
    "messages_too_long", "too_many_parts", "conflicting_max_tokens", "stream_options_without_stream",
    "invalid_prompt",
)  # fmt: skip


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "description": "a `chat.completion` object, or with `stream: true` server-sent "
            "`chat.completion.chunk` events ending in `data: [DONE]`",
            "content": {"application/json": {}, "text/event-stream": {"schema": {"type": "string"}}},
        },
        **answers(404, 502, 503, checks=CHECKS),
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, state: State, caller: ChatCompletionCaller
) -> Any:
    """Render the conversation, generate, and answer as one object or as server-sent events.
    The caller's request bucket was charged before the body was read (`gateway.auth.AuthGate`)."""
    settings = state.settings
    _check_limits(body, state)
    info = _model(state, body.model)
    try:
        prompt_ids = await state.codec.render_for_completion(
            [m.to_chatforge() for m in body.messages], max_tokens=info.context_length - 1
        )
    except ConversationTooLong as e:
        raise APIError(
            400,
            f"this model's context is {info.context_length} tokens; the messages take {e.n_tokens}",
            param="messages",
            code="context_length_exceeded",
        ) from None
    except CodecUnavailable as e:
        raise APIError(503, f"tokenizer unavailable: {e}", code="tokenizer_unavailable") from None
    max_tokens = _max_tokens(body, info, len(prompt_ids), settings.max_tokens_limit)
    cost = len(prompt_ids) + max_tokens * body.n
    if cost > settings.rate_token_burst:
        raise APIError(
            400,
            f"this request may use {cost} tokens (prompt + max_tokens x n), more than one key's "
            f"budget of {settings.rate_token_burst}: lower max_tokens or n",
            param="max_tokens",
            code="token_budget_exceeded",
        )
    _charge(
        state, caller, Bucket("tokens", settings.rate_tokens_per_min / 60, settings.rate_token_burst), cost
    )

    sp = state.codec.special_ids
    given = {
        k: getattr(body, k) for k in ("temperature", "top_p", "top_k", "seed") if getattr(body, k) is not None
    }
    sampling = SamplingParams(
        max_tokens=max_tokens,
        stop_token_ids=tuple(sp[t] for t in REPLY_ENDS if t in sp),
        tools=body.tools_enabled,
        **given,
    )
    engine_text = settings.detokenize == "engine" and bool(info.tokenizer)
    plan = CompletionPlan(prompt_ids, sampling, body.stop_list, body.n, engine_text)
    slot = state.admission.slot()
    await slot.__aenter__()
    run = CompletionRun(state.inference, state.codec, plan)
    try:
        await run.start()
    except BaseException as e:
        await slot.__aexit__(None, None, None)
        raise _inference_error(e) from None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(_stream(run, slot, state, info.id, len(prompt_ids), include_usage))
    return await _complete(run, slot, state, request, info.id, len(prompt_ids))


# --- checks --------------------------------------------------------------------------------------


def _check_limits(body: ChatCompletionRequest, state: GatewayState) -> None:
    """The settings' bounds on single fields (declared on the request model), then the sums."""
    s = state.settings
    violation = first_violation(body, s)
    if violation is not None:
        raise APIError(400, violation.message, param=violation.param, code=violation.code)
    parts = sum(len(m.content) for m in body.messages if isinstance(m.content, list))
    if parts > s.max_total_parts:
        raise APIError(
            400, f"the messages have {parts} content parts, over the limit of {s.max_total_parts}",
            param="messages", code="too_many_parts",
        )  # fmt: skip
    total = 0
    for i, m in enumerate(body.messages):
        total += m.chars
        if m.chars > s.max_message_chars:  # parts that fit one by one, but not together
            raise APIError(
                400, f"messages[{i}] has {m.chars} characters, over the limit of {s.max_message_chars}",
                param=f"messages.{i}.content", code="message_too_long",
            )  # fmt: skip
    if total > s.max_total_chars:
        raise APIError(
            400, f"the messages have {total} characters, over the limit of {s.max_total_chars}",
            param="messages", code="messages_too_long",
        )  # fmt: skip


def _charge(state: GatewayState, caller: Principal, bucket: Bucket, cost: float) -> None:
    decision = state.limiter.charge(caller.key_id, bucket, cost)
    if not decision.allowed:
        state.metrics.rate_limited.labels(bucket.kind).inc()
        raise refused(bucket, decision)


def _model(state: GatewayState, requested: str) -> ModelInfo:
    try:
        info = state.inference.model_info()
    except InferenceUnavailable as e:
        raise APIError(503, str(e), code="model_unavailable") from None
    if requested not in (info.id, info.checkpoint):
        raise APIError(
            404, f"the model {requested!r} does not exist; this server serves {info.id!r}", param="model",
            code="model_not_found",
        )  # fmt: skip
    return info


def _max_tokens(body: ChatCompletionRequest, info: ModelInfo, prompt_len: int, limit: int) -> int:
    room = info.context_length - prompt_len
    asked = body.requested_max_tokens
    if asked is None:
        return max(1, min(room, limit))
    if asked > room:
        raise APIError(
            400,
            f"this model's context is {info.context_length} tokens; the messages take {prompt_len} and "
            f"max_tokens asks for {asked} more: lower max_tokens to {room} or shorten the messages",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return asked


def _inference_error(e: BaseException) -> BaseException:
    if isinstance(e, ServiceError):
        detail = e.detail
        if detail.kind is ErrorKind.CONTEXT_LENGTH_EXCEEDED:
            return APIError(400, detail.message, param="messages", code="context_length_exceeded")
        if detail.kind is ErrorKind.INVALID_REQUEST:
            return APIError(
                400,
                f"the model refused the request: {detail.message}",
                param=detail.param,
                code="invalid_prompt",
            )
        if detail.kind is ErrorKind.UNAVAILABLE:
            return APIError(503, f"generation unavailable: {detail.message}", code="inference_unavailable")
    if isinstance(e, CodecUnavailable):
        return APIError(503, f"generation unavailable: {e}", code="inference_unavailable")
    if isinstance(e, APIError | asyncio.CancelledError):
        return e
    return from_exception(e)


# --- answers -------------------------------------------------------------------------------------


async def _complete(
    run: CompletionRun, slot: Any, state: GatewayState, request: Request, model: str, prompt_tokens: int
) -> JSONResponse:
    texts: list[list[str]] = [[] for _ in range(run.plan.n)]
    tools: list[list[dict[str, Any]]] = [[] for _ in range(run.plan.n)]
    outcomes: list[Outcome | None] = [None] * run.plan.n
    watcher = asyncio.create_task(_disconnected(request))
    try:
        async for index, item in _until(run.events(), watcher):
            if isinstance(item, Outcome):
                outcomes[index] = item
            elif item.tool is not None:
                tools[index].append(item.tool)
            else:
                texts[index].append(item.text)
    finally:
        watcher.cancel()
        await run.aclose()
        await slot.__aexit__(None, None, None)
    ended = [o for o in outcomes if o is not None]
    if len(ended) < len(outcomes):  # the client left: nobody reads this answer
        raise APIError(499, "client closed the request", code="client_closed")
    failed = [o for o in ended if o.finish_reason == "error"]
    if failed:
        raise APIError(502, f"generation failed: {failed[0].error}", code="inference_error")
    completion_tokens = sum(o.completion_tokens for o in ended)
    state.metrics.generated_tokens.inc(completion_tokens)
    choices = []
    for i, outcome in enumerate(ended):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts[i])}
        if tools[i]:
            message["tool_activity"] = tools[i]
        choices.append(
            {"index": i, "message": message, "finish_reason": outcome.finish_reason, "logprobs": None}
        )
    return JSONResponse(
        {
            "id": completion_id(),
            "object": "chat.completion",
            "created": now_s(),
            "model": model,
            "choices": choices,
            "usage": usage_dict(prompt_tokens, completion_tokens),
            "system_fingerprint": None,
        }
    )


async def _stream(
    run: CompletionRun, slot: Any, state: GatewayState, model: str, prompt_tokens: int, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    cid, created = completion_id(), now_s()
    completion_tokens = 0

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices,
        }  # fmt: skip
        if include_usage:
            body["usage"] = usage
        return event(body)

    state.metrics.streams_open.inc()
    try:
        for i in range(run.plan.n):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        out: list[bytes] = []
        async for index, item in run.events():
            if isinstance(item, Outcome):
                completion_tokens += item.completion_tokens
                if item.finish_reason == "error":
                    error = APIError(502, f"generation failed: {item.error}", code="inference_error")
                    out.append(event({"error": error.body()["error"]}))
                out.append(
                    chunk(
                        [{"index": index, "delta": {}, "finish_reason": item.finish_reason, "logprobs": None}]
                    )
                )
            else:
                out.append(chunk([{"index": index, "delta": _delta(item), "finish_reason": None}]))
            # Events that queued up while the last write was in flight go out in one write: under
            # load that is one send per stream per loop turn instead of one per token.
            if not run.pending:
                yield b"".join(out)
                out.clear()
        if out:
            yield b"".join(out)
        if include_usage:
            yield chunk([], usage_dict(prompt_tokens, completion_tokens))
        yield event("[DONE]")
    finally:
        state.metrics.streams_open.dec()
        state.metrics.generated_tokens.inc(completion_tokens)
        await run.aclose()
        await slot.__aexit__(None, None, None)


def _delta(item: Delta) -> dict[str, Any]:
    if item.tool is not None:
        return {"chatforge_tool": item.tool}
    return {"content": item.text}


async def _disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.1)


async def _until(events: Any, watcher: asyncio.Task[None]) -> Any:
    """The run's events until they end or `watcher` (the client leaving) finishes first."""
    iterator = events.__aiter__()
    while True:
        next_item = asyncio.ensure_future(iterator.__anext__())
        done, _ = await asyncio.wait({next_item, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if next_item not in done:
            next_item.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_item
            return
        try:
            yield next_item.result()
        except StopAsyncIteration:
            return
