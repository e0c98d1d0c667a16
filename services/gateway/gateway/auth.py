"""API keys: created and revoked by an admin (CLI or API), stored hashed in Redis, checked per request.

A key is `cf-<id>-<secret>`; Redis holds only sha256(pepper + key), so a copy of the database does
not hand out keys, and the pepper (a server setting) keeps the hashes from being checked offline.
Scopes: `chat` (chat and conversations) and `admin` (jobs, deployments, keys; implies chat).
With auth off (local mode on 127.0.0.1) every caller is the `local` principal with both scopes.

`AuthGate` checks all of it before a request's body is read: it finds the route a request is for,
reads the route's policy from its `require(scope, rate=...)` dependency, and answers 401, 403 or
(past the key's rate for chat completions or for writes) 429 at once, so a caller without a key
costs one header lookup however large a body it sends, and a key past its rate no more. The
dependency then only hands the principal to the route.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from starlette.routing import Match

from chatforge.body_limit import send_json
from gateway import redis_keys
from gateway.errors import APIError
from gateway.ratelimit import Bucket, refused

if TYPE_CHECKING:
    from gateway.state import GatewayState

SCOPES: tuple[str, ...] = ("chat", "admin")
CHALLENGE = {"WWW-Authenticate": "Bearer"}  # what a 401 asks for (RFC 6750)
PEPPER_CHECK = "chatforge key pepper check"  # never a key: keys are cf-<id>-<secret>


class KeyRequestError(ValueError):
    """A key request that cannot be done (unknown scope, unknown id)."""


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


LOCAL = Principal("local", "local", frozenset(SCOPES))


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    created: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.key_id, "name": self.name, "scopes": list(self.scopes), "created": self.created}


class KeyStore:
    def __init__(self, redis: Any, pepper: str):
        self.redis = redis
        self._pepper = pepper.encode()

    def create(self, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[str, KeyInfo]:
        """A new key: returns the key itself (shown once, never stored) and its record."""
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise KeyRequestError(
                f"scopes must be a non-empty subset of {', '.join(SCOPES)}, got {list(scopes)}"
            )
        if not name or len(name) > 100:
            raise KeyRequestError("key name must be 1 to 100 characters")
        key_id = secrets.token_hex(6)
        key = f"cf-{key_id}-{secrets.token_urlsafe(24)}"
        info = KeyInfo(key_id, name, tuple(dict.fromkeys(scopes)), int(time.time()))
        digest = self._digest(key)
        pipe = self.redis.pipeline()
        pipe.set(redis_keys.api_key(digest), json.dumps(info.to_dict()))
        pipe.hset(redis_keys.API_KEY_INDEX, key_id, digest)
        pipe.execute()
        return key, info

    def revoke(self, key_id: str) -> bool:
        digest = self.redis.hget(redis_keys.API_KEY_INDEX, key_id)
        if digest is None:
            return False
        pipe = self.redis.pipeline()
        pipe.delete(redis_keys.api_key(digest))
        pipe.hdel(redis_keys.API_KEY_INDEX, key_id)
        pipe.execute()
        return True

    def list(self) -> list[KeyInfo]:
        digests = self.redis.hvals(redis_keys.API_KEY_INDEX)
        records = self.redis.mget([redis_keys.api_key(d) for d in digests]) if digests else []
        infos = [_info(json.loads(r)) for r in records if r]
        return sorted(infos, key=lambda i: (i.created, i.key_id))

    def verify(self, key: str) -> Principal | None:
        record = self.redis.get(redis_keys.api_key(self._digest(key)))
        if record is None:
            return None
        info = _info(json.loads(record))
        return Principal(info.key_id, info.name, frozenset(info.scopes))

    def publish_pepper(self) -> None:
        """Record which pepper keys are checked with (a gateway with keys on, at start), as an HMAC
        of a constant: it tells a wrong pepper from the right one and reveals no more than any
        key's own hash already does to whoever holds that key."""
        self.redis.set(redis_keys.API_KEY_PEPPER, self._digest(PEPPER_CHECK))

    def pepper_matches(self) -> bool | None:
        """Whether this store's pepper is the one a gateway on this Redis published (None: none did)."""
        published = self.redis.get(redis_keys.API_KEY_PEPPER)
        if published is None:
            return None
        published = published.decode() if isinstance(published, bytes) else str(published)
        return hmac.compare_digest(published, self._digest(PEPPER_CHECK))

    def _digest(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()


def _info(d: dict[str, Any]) -> KeyInfo:
    return KeyInfo(d["id"], d["name"], tuple(d["scopes"]), int(d["created"]))


# --- before the body: the gate, and the dependencies routes declare ------------------------------


Rate = Literal["requests", "writes"]


@dataclass(frozen=True)
class Policy:
    """What a route asks of its caller: a scope, and the per-key bucket each call is charged to
    (`requests`: chat completions; `writes`: conversations, jobs, deployments, keys)."""

    scope: str
    rate: Rate | None = None


def require(scope: str, *, rate: Rate | None = None) -> Any:
    """A dependency that admits callers holding `scope` (403 otherwise) within `rate` (429);
    `AuthGate` enforces it before the body is read and leaves the principal in
    `request.state.principal`."""
    policy = Policy(scope, rate)

    def check(request: Request) -> Principal:
        principal = getattr(request.state, "principal", None)
        if principal is None:  # an app without the gate (create_app always adds it)
            principal = admit(request.app.state.gateway, policy, request.headers.get("authorization", ""))
        return principal

    check.policy = policy  # type: ignore[attr-defined]
    return check


ChatCaller = Annotated[Principal, Depends(require("chat"))]
ChatCompletionCaller = Annotated[Principal, Depends(require("chat", rate="requests"))]
ChatWriter = Annotated[Principal, Depends(require("chat", rate="writes"))]
AdminCaller = Annotated[Principal, Depends(require("admin"))]
AdminWriter = Annotated[Principal, Depends(require("admin", rate="writes"))]


def admit(state: GatewayState, policy: Policy, authorization: str) -> Principal:
    """The caller, if its key allows what `policy` asks, charged one unit of the policy's rate."""
    principal = authorize(state, policy, authorization)
    if policy.rate is not None:
        charge(state, principal, policy.rate)
    return principal


def authorize(state: GatewayState, policy: Policy, authorization: str) -> Principal:
    """The caller behind an `Authorization` header value, if it may do what `policy` asks; else APIError."""
    principal = LOCAL if not state.settings.auth_required else _verify(state.keys, authorization)
    if not principal.allows(policy.scope):
        raise APIError(
            403, f"this API key lacks the '{policy.scope}' scope needed here", code="insufficient_scope"
        )
    return principal


def charge(state: GatewayState, principal: Principal, rate: Rate) -> None:
    """One unit from the caller's bucket for `rate`; 429 with Retry-After when it is empty."""
    s = state.settings
    if rate == "requests":
        bucket = Bucket("requests", s.rate_requests_per_min / 60, s.rate_request_burst)
    else:
        bucket = Bucket("writes", s.rate_writes_per_min / 60, s.rate_write_burst)
    decision = state.limiter.charge(principal.key_id, bucket, 1)
    if not decision.allowed:
        state.metrics.rate_limited.labels(bucket.kind).inc()
        raise refused(bucket, decision)


class AuthGate:
    """ASGI middleware: authentication, scope and rate of every API route, before its body."""

    def __init__(self, app: Any, *, routes: list[APIRoute], state: Callable[[], GatewayState]):
        self.app = app
        self._routes = routes
        self._state = state
        self._policies: dict[int, Policy | None] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route, child = self._route(scope)
        policy = self._policy(route) if route is not None else None
        if policy is not None:
            state = self._state()
            authorization = _header(scope, b"authorization")
            try:
                principal = await anyio.to_thread.run_sync(admit, state, policy, authorization)
            except APIError as e:
                scope.update(child)  # the metrics count the refusal under its route
                await send_json(send, e.status, e.body(), e.headers)
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _route(self, scope: MutableMapping[str, Any]) -> tuple[APIRoute | None, MutableMapping[str, Any]]:
        for route in self._routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return route, child
        return None, {}

    def _policy(self, route: APIRoute) -> Policy | None:
        key = id(route)
        if key not in self._policies:
            self._policies[key] = route_policy(route)
        return self._policies[key]


def route_policy(route: APIRoute) -> Policy | None:
    """The policy a route declares through its dependencies (None: public)."""
    return _find_policy(route.dependant)


def _find_policy(dependant: Any) -> Policy | None:
    for dep in dependant.dependencies:
        policy = getattr(dep.call, "policy", None)
        if isinstance(policy, Policy):
            return policy
        found = _find_policy(dep)
        if found is not None:
            return found
    return None


def _verify(keys: KeyStore, authorization: str) -> Principal:
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(
            401,
            "missing API key: send 'Authorization: Bearer <key>' (create one with `chatforge keys create`)",
            code="missing_api_key",
            headers=CHALLENGE,
        )
    principal = keys.verify(key.strip())
    if principal is None:
        raise APIError(
            401, "invalid API key (revoked or never issued)", code="invalid_api_key", headers=CHALLENGE
        )
    return principal


def _header(scope: MutableMapping[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""
