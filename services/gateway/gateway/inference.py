"""What the gateway needs of the inference service: the `InferenceClient` protocol.

The engine sees token ids only (docs/architecture.md): the gateway sends prompt ids and
`SamplingParams`, and reads back `StreamItem`s (`chatforge.contracts.generate`): new token ids with
their text, tool activity, and a finish or error event last. Leaving the `generate` iterator early
(`aclose`, or a client that disconnects) cancels the request. A request the service refuses before
streaming raises `ServiceError` with the service's `ErrorDetail` (a context-length error carries its
numbers). Implementations: `gateway.local_inference.LocalInference` (the engine in this process)
and `gateway.remote_inference.RemoteInference` (the Ray Serve application over HTTP).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from chatforge.contracts.errors import ErrorDetail, ErrorKind, ServiceError
from chatforge.contracts.generate import ServedModelInfo, StreamItem
from chatforge.contracts.sampling import SamplingParams


class InferenceUnavailable(ServiceError):
    """The inference service cannot take requests now (not started, unreachable, overloaded): 503."""

    def __init__(self, message: str):
        super().__init__(ErrorDetail(kind=ErrorKind.UNAVAILABLE, message=message))


@dataclass(frozen=True)
class ModelInfo:
    """The served model as the gateway's API shows it."""

    id: str
    context_length: int
    checkpoint: str  # the artifact-store name it was loaded from (run/stage/step_N)
    created: int  # unix seconds the gateway first saw it
    tokenizer: str = ""

    @classmethod
    def of(cls, model_id: str, served: ServedModelInfo, created: int) -> ModelInfo:
        return cls(model_id, served.context_length, served.checkpoint, created, served.tokenizer or "")


class InferenceClient(Protocol):
    def model_info(self) -> ModelInfo:
        """The model served now."""
        ...

    def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> AsyncIterator[StreamItem]:
        """Stream items ending with a finish or error event; closing the iterator cancels."""
        ...

    async def deploy(self, checkpoint: str, progress: Callable[[str], None] | None = None) -> ModelInfo:
        """Serve `checkpoint` (run/stage or run/stage/step_N) from now on, on every replica;
        `progress` hears each step of the switch as a line."""
        ...

    async def check(self) -> None:
        """Raise InferenceUnavailable when generation cannot run."""
        ...

    async def close(self) -> None: ...
