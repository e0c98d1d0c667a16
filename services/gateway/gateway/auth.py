"""API keys: created and revoked by an admin (CLI or API), stored hashed in Redis, checked per request.

A key is `cf-<id>-<secret>`; Redis holds only sha256(pepper + key), so a copy of the database does
not hand out keys, and the pepper (a server setting) keeps the hashes from being checked offline.
Scopes: `chat` (chat and conversations) and `admin` (jobs, deployments, keys; implies chat).
With auth off (local mode on 127.0.0.1) every caller is the `local` principal with both scopes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from gateway import redis_keys
from gateway.errors import APIError

SCOPES: tuple[str, ...] = ("chat", "admin")


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

    def _digest(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()


def _info(d: dict[str, Any]) -> KeyInfo:
    return KeyInfo(d["id"], d["name"], tuple(d["scopes"]), int(d["created"]))


# --- FastAPI dependencies ------------------------------------------------------------------------


def authenticate(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <key>`; 401 without a valid key when keys are on."""
    state = request.app.state.gateway
    if not state.settings.auth_required:
        return LOCAL
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(
            401,
            "missing API key: send 'Authorization: Bearer <key>' (create one with `chatforge keys create`)",
            code="missing_api_key",
        )
    principal = state.keys.verify(key.strip())
    if principal is None:
        raise APIError(401, "invalid API key (revoked or never issued)", code="invalid_api_key")
    request.state.principal = principal
    return principal


def require(scope: str) -> Any:
    """A dependency that admits callers holding `scope`; 403 otherwise."""

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.allows(scope):
            raise APIError(
                403, f"this API key lacks the '{scope}' scope needed here", code="insufficient_scope"
            )
        return principal

    return check


ChatCaller = Annotated[Principal, Depends(require("chat"))]
AdminCaller = Annotated[Principal, Depends(require("admin"))]
