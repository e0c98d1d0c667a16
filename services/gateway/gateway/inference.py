"""What the gateway needs of the inference service: the `InferenceClient` protocol and its data.

The engine sees token ids only (STYLE 11): the gateway sends prompt ids and sampling, and reads back
pieces, each a few new token ids and/or an event (`tool_call`, `tool_result`, `finish`, `error`).
Leaving the `generate` iterator early (`aclose`, or a client that disconnects) cancels the request.
Implementations: `gateway.local_inference.LocalInference` (the engine in this process) and
`gateway.remote_inference.RemoteInference` (the Ray Serve application over HTTP).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


class InferenceUnavailable(RuntimeError):
    """The inference service cannot take requests now (not started, unreachable, overloaded): 503."""


class InferenceRejected(ValueError):
    """The inference service refused this request's input (too long, bad ids): 400."""


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    tools: bool = True


@dataclass(frozen=True)
class Piece:
    token_ids: tuple[int, ...] = ()
    event: str | None = None  # tool_call, tool_result, finish, error
    data: dict[str, Any] = field(default_factory=dict)
    # The engine's own detokenized text for these ids (its StreamDecoder), when it has a tokenizer.
    text: str = ""


@dataclass(frozen=True)
class ModelInfo:
    id: str
    context_length: int
    checkpoint: str  # the artifact-store name it was loaded from (run/stage/step_N)
    created: int  # unix seconds the checkpoint was written
    tokenizer: str = ""


class InferenceClient(Protocol):
    def model_info(self) -> ModelInfo:
        """The model served now."""
        ...

    def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Piece]:
        """Stream pieces ending with a `finish` or `error` event; closing the iterator cancels."""
        ...

    async def deploy(self, checkpoint: str) -> ModelInfo:
        """Serve `checkpoint` (run/stage or run/stage/step_N) from now on."""
        ...

    async def check(self) -> None:
        """Raise InferenceUnavailable when generation cannot run."""
        ...

    async def close(self) -> None: ...


def generate_body(prompt_ids: list[int], params: GenerationParams) -> dict[str, Any]:
    """The inference service's request body (`inference_svc.protocol`) for raw prompt ids."""
    body: dict[str, Any] = {
        "prompt_ids": list(prompt_ids),
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "stop_token_ids": list(params.stop_token_ids),
        "tools": params.tools,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    return body


def piece_from_item(item: dict[str, Any]) -> Piece:
    """A stream item dict (`inference_svc.outputs.StreamItem.to_dict`) as a Piece."""
    token = item.get("token_id")
    ids = (int(token),) if token is not None else ()
    text = str(item.get("text") or "")
    event = item.get("event")
    if not event:
        return Piece(ids, text=text)
    return Piece(ids, str(event.get("kind")), dict(event.get("data") or {}), text)
