"""Errors that cross a process boundary: a kind, a message, and the numbers a caller acts on.

A service that refuses a request sends an `ErrorDetail`, never only prose: over HTTP as the JSON
body (`{"error": {...}}`) with the kind's status; over gRPC as the status code of the kind plus the
detail as JSON in the trailing metadata key `chatforge-error-bin`; inside a generation stream as
the last item's error event. The receiver reads the fields (a context-length error carries
`context_length` and `prompt_tokens`), so no one parses a message to learn what went wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, ValidationError

GRPC_METADATA_KEY = "chatforge-error-bin"  # "-bin": gRPC carries the value as bytes


class ErrorKind(StrEnum):
    INVALID_REQUEST = "invalid_request"  # the input cannot be served as written
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # the prompt does not fit the model
    UNAVAILABLE = "unavailable"  # not started, switching models, stopping: try again later
    INTERNAL = "internal"  # a bug or a crash on the service's side


HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_REQUEST: 400,
    ErrorKind.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}
# gRPC status names (grpc.StatusCode[name]); the core does not import grpc.
GRPC_STATUS: dict[ErrorKind, str] = {
    ErrorKind.INVALID_REQUEST: "INVALID_ARGUMENT",
    ErrorKind.CONTEXT_LENGTH_EXCEEDED: "INVALID_ARGUMENT",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
    ErrorKind.INTERNAL: "INTERNAL",
}


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer peer may add fields

    kind: ErrorKind
    message: str
    param: str | None = None  # the request field at fault, when one is
    context_length: int | None = None  # context_length_exceeded: the model's context, in tokens
    prompt_tokens: int | None = None  # context_length_exceeded: what the prompt needs

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.kind]

    @property
    def grpc_status(self) -> str:
        return GRPC_STATUS[self.kind]


class ServiceError(Exception):
    """An error a service reports to its caller as an `ErrorDetail`."""

    def __init__(self, detail: ErrorDetail):
        super().__init__(detail.message)
        self.detail = detail

    @classmethod
    def invalid(cls, message: str, param: str | None = None) -> ServiceError:
        return cls(ErrorDetail(kind=ErrorKind.INVALID_REQUEST, message=message, param=param))

    @classmethod
    def unavailable(cls, message: str) -> ServiceError:
        return cls(ErrorDetail(kind=ErrorKind.UNAVAILABLE, message=message))

    @classmethod
    def context_length(
        cls, prompt_tokens: int, context_length: int, *, param: str = "messages", why: str = ""
    ) -> ServiceError:
        message = f"this model's context is {context_length} tokens; the prompt takes {prompt_tokens}"
        return cls(
            ErrorDetail(
                kind=ErrorKind.CONTEXT_LENGTH_EXCEEDED,
                message=f"{message} ({why})" if why else message,
                param=param,
                context_length=context_length,
                prompt_tokens=prompt_tokens,
            )
        )

    @property
    def kind(self) -> ErrorKind:
        return self.detail.kind


def detail_from_validation(error: ValidationError, prefix: str = "") -> ErrorDetail:
    """A pydantic ValidationError as an invalid-request detail naming the first bad field."""
    first = error.errors()[0]
    param = ".".join(str(p) for p in (*([prefix] if prefix else []), *first["loc"]))
    return ErrorDetail(
        kind=ErrorKind.INVALID_REQUEST, message=f"{param}: {first['msg']}", param=param or None
    )


def to_grpc_metadata(detail: ErrorDetail) -> tuple[tuple[str, bytes]]:
    """Trailing metadata that carries `detail` beside a gRPC status."""
    return ((GRPC_METADATA_KEY, detail.model_dump_json(exclude_none=True).encode()),)


def from_grpc_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> ErrorDetail | None:
    """The detail in a call's trailing metadata, or None when the peer sent none (or garbage)."""
    for key, value in metadata or ():
        if key == GRPC_METADATA_KEY:
            try:
                return ErrorDetail.model_validate_json(value)
            except ValidationError:
                return None
    return None
