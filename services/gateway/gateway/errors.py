"""Errors as the API shows them: OpenAI-shaped bodies, one place that maps exceptions to statuses.

Every error response is `{"error": {"message", "type", "param", "code"}}`. Route code raises
`APIError` (or a library's own exception listed in `_MAPPED`); `install` turns each into its status.
A bug still answers 500, but with a generic message: stack traces go to the log, never to clients.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from chatforge.artifacts import ArtifactError
from chatforge.chat import ConversationError, ConversationTooLong

log = logging.getLogger(__name__)

# status -> OpenAI error type
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "timeout_error",
}


class ErrorObject(BaseModel):
    message: str = Field(description="what went wrong and what to change")
    type: str = Field(description="OpenAI's error type: invalid_request_error, authentication_error, ...")
    param: str | None = Field(description="the request field at fault (messages.0.content), if one is")
    code: str | None = Field(description="a stable machine-readable reason (n_too_large, missing_api_key)")


class ErrorBody(BaseModel):
    """Every error the gateway answers, whatever the status: OpenAI's shape."""

    error: ErrorObject


class APIError(Exception):
    """An error meant for the client: its status, message, and the request field it is about."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def from_exception(e: BaseException) -> APIError:
    """The APIError a known exception stands for; a generic 500 for anything else (a bug)."""
    if isinstance(e, APIError):
        return e
    if isinstance(e, ConversationTooLong):
        return APIError(400, str(e), param="messages", code="context_length_exceeded")
    if isinstance(e, ConversationError):
        return APIError(400, str(e), param="messages", code="invalid_messages")
    if isinstance(e, ArtifactError):
        return APIError(404, str(e), code="not_found")
    if isinstance(e, RedisConnectionError | RedisTimeoutError):  # an outage, not a bug: retry shortly
        return APIError(
            503, "the gateway's store (Redis) is unreachable: try again shortly", code="store_unavailable",
            headers={"Retry-After": "1"},
        )  # fmt: skip
    return APIError(500, "internal error: the gateway logged the details", code="internal_error")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into an OpenAI-shaped JSON error."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError) -> JSONResponse:
        return respond(e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        return respond(validation_error(e.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = e.detail if isinstance(e.detail, str) else "request failed"
        if e.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        headers = dict(e.headers or {})
        if e.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
            headers["Allow"] = _allowed(request) or headers.get("Allow", "")
        return respond(APIError(e.status_code, message, headers=headers))

    # Known client mistakes raised below the routes get handlers of their own: Starlette answers a
    # handler registered for Exception and then re-raises, which drops the keep-alive connection.
    @app.exception_handler(ConversationError)
    @app.exception_handler(ArtifactError)
    async def _known(request: Request, e: Exception) -> JSONResponse:
        return respond(from_exception(e))

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _store_down(request: Request, e: Exception) -> JSONResponse:
        log.warning("Redis unreachable on %s %s: %s", request.method, request.url.path, e)
        return respond(from_exception(e))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        mapped = from_exception(e)
        if mapped.status >= 500:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
        return respond(mapped)


def _allowed(request: Request) -> str:
    """Every method the path takes: each method is its own route, and a 405 names them all."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "api_routes", ()):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match is not Match.NONE:
            methods |= route.methods or set()
    return ", ".join(sorted(methods))


def respond(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def validation_error(errors: Any) -> APIError:
    """A 400 for the first problem pydantic found, naming the field as OpenAI does (`messages.0.role`)."""
    errors = list(errors)
    if not errors:
        return APIError(400, "invalid request body")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_tag(p)]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return APIError(400, "request body is not valid JSON", code="invalid_json")
    if first.get("type") == "missing" and not loc:
        return APIError(400, "request body is missing", code="missing_body")
    message = first.get("msg", "invalid value")
    where = f"{param}: " if param else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    # A check the request's schema cannot state (two fields that must agree) names its own code.
    code = (first.get("ctx") or {}).get("code") or _CODES_BY_TYPE.get(first.get("type", ""), "invalid_value")
    return APIError(400, f"{where}{message}{more}", param=param, code=code)


def _union_tag(part: Any) -> bool:
    """Whether a location part names a member of a union (`str`, `list[ContentPart]`,
    `constrained-str`), which pydantic puts in the path; clients know fields and indexes only."""
    return isinstance(part, str) and _UNION_TAG.fullmatch(part) is not None


# The tags pydantic gives union members: a type's name, a generic (`list[...]`, `function-after[...]`)
# or a constrained type. A field name a client made up ("Num Steps") is none of these.
_UNION_TAG = re.compile(
    r"str|int|float|bool|list|dict|tuple|none|bytes|[a-z]+(-[a-z]+)*\[.*\]|constrained-[a-z]+"
)
# Pydantic error types raised by the contracts' own checks, by the code the gateway answers with.
_CODES_BY_TYPE = {"config_error": "invalid_config", "launch_flag": "launch_flag"}
