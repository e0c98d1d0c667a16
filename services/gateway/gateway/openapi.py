"""The published OpenAPI document (`/openapi.json`, `/docs`): the gateway's contract with its clients.

FastAPI generates it from the routes and their request models; `document` completes it with what
FastAPI cannot know, from the same sources the server acts on: every status a route answers in the
error shape (`ErrorBody`), 400 where FastAPI would say 422 (the gateway answers 400), 401 and the
bearer security scheme on every keyed route when keys are on, 403 on admin routes, 413 wherever a
body is read, 429 wherever a rate applies, and the limits with this server's values
(`chatforge.request_limits.publish`). A route states the statuses only it knows with `answers(...)`.
`tests/gateway/test_openapi.py` runs schemathesis against a live gateway with this document.

Some refusals depend on more than one field or on the model, which a schema cannot say: the turn
order of messages, the context length, a token budget, the sum of characters. A route lists their
error codes as `x-checks` on its 400, and only those codes may refuse a request the schema allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from chatforge.request_limits import publish
from gateway.auth import route_policy
from gateway.errors import ErrorBody
from gateway.settings import Settings

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
SECURITY_SCHEME = "apiKey"
DESCRIPTIONS = {
    400: "Invalid request: `error.param` names the field, `error.code` the reason.",
    401: "Missing or invalid API key (`Authorization: Bearer <key>`).",
    403: "The API key lacks the scope this route needs (`admin`).",
    404: "Not found: `error.code` says what (model, job, conversation, checkpoint, ...).",
    409: "Conflicts with the resource's state (a job that already ended, another backend's job).",
    413: "The request body is over `max_body_bytes` (or a stored document over its limit).",
    429: "A per-key rate limit: retry after `Retry-After` seconds.",
    502: "An upstream part failed (the job backend, or generation after it started).",
    503: "Unavailable for now (no model loaded, tokenizer or inference down, queue full): retry.",
}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
CHALLENGE = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}


def answers(*statuses: int, checks: Sequence[str] = ()) -> dict[int | str, Any]:
    """A route's `responses=`: the error statuses it answers itself (the ones every route of its kind
    answers are added by `document`); `checks`: codes of 400s a schema cannot express."""
    # The content is spelled out: a route answering text/plain (logs) still errs in JSON.
    out: dict[int | str, Any] = {s: _error_response(s) for s in statuses}
    if checks:
        out[400] = {**_error_response(400), "x-checks": list(checks)}
    if 429 in statuses:
        out[429]["headers"] = RETRY_AFTER
    return out


def document(app: FastAPI, routes: list[APIRoute], settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of `app`, whose API routes are `routes`, as configured by `settings`."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body: never sent here
        schemas.pop(name, None)
    error = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(error.pop("$defs", {}))
    schemas["ErrorBody"] = error
    if settings.auth_required:
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key from `chatforge keys create` (scope chat, or admin)",
            }
        }
    for route in routes:
        if route.include_in_schema:
            for method in route.methods or ():
                _complete(schema["paths"][route.path_format][method.lower()], route, settings)
    return publish(schema, settings)


def _error_response(status: int) -> dict[str, Any]:
    return {"description": DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_REF}}}


def _complete(operation: dict[str, Any], route: APIRoute, settings: Settings) -> None:
    responses = operation.setdefault("responses", {})
    added: list[int] = []
    if responses.pop("422", None) is not None:  # FastAPI validates here: the gateway answers 400
        added.append(400)
    if "requestBody" in operation:
        added.append(413)
    policy = route_policy(route)
    if policy is not None and settings.auth_required:
        operation["security"] = [{SECURITY_SCHEME: []}]
        added.append(401)
        if policy.scope == "admin":
            added.append(403)
    if policy is not None and policy.rate is not None:
        added.append(429)
    for status in added:
        response = responses.setdefault(str(status), _error_response(status))
        if status == 429:
            response.setdefault("headers", RETRY_AFTER)
        if status == 401:
            response.setdefault("headers", CHALLENGE)
