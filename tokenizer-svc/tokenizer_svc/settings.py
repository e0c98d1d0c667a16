"""The tokenizer service's one Settings object, read from the environment and validated at start.

Every field is `CHATFORGE_TOKENIZER_<FIELD>` in the environment (e.g. `CHATFORGE_TOKENIZER_PORT`),
except the artifact store's root, which every chatforge process reads from `CHATFORGE_ARTIFACTS`.
The CLI's flags override the environment; the defaults live here only.
"""

from __future__ import annotations

import ipaddress

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatforge.artifacts import DEFAULT_ROOT
from chatforge.settings import SettingsError as SettingsError  # re-exported: callers catch it from here
from chatforge.settings import load_settings as load_settings_of
from chatforge.tokenizer_client import DEFAULT_PORT

ENV_PREFIX = "CHATFORGE_TOKENIZER_"
MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    name: str = Field(default="default", min_length=1, description="tokenizer to load from the store")
    artifacts_root: str = Field(
        default=DEFAULT_ROOT,
        min_length=1,
        validation_alias=AliasChoices("artifacts_root", "CHATFORGE_ARTIFACTS"),
        description="artifact store root (tokenizers/<name>/tokenizer.json lives under it)",
    )
    # 127.0.0.1 on one machine; a pod sets 0.0.0.0 so the cluster can reach it.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="0 picks a free port")
    metrics_enabled: bool = True
    metrics_port: int = Field(
        default=9464, ge=0, le=65535, description="Prometheus /metrics; 0 picks a free port"
    )
    workers: int = Field(default=8, ge=1, le=256, description="threads serving RPCs")
    # Beyond this many RPCs in flight new ones fail fast with RESOURCE_EXHAUSTED instead of queueing.
    max_concurrent_rpcs: int = Field(default=512, ge=1)
    # gRPC's own default is 4 MiB; 16 MiB fits a full batch of max-size texts' ids (4 bytes/id worst case).
    max_message_bytes: int = Field(default=16 * MIB, ge=64 * 1024)
    # --- limits: each checked before the work it bounds, INVALID_ARGUMENT naming it (the table is
    # in docs/limits.md). max_message_bytes bounds what gRPC reads at all.
    # Per text (or per conversation, all parts together). ~1M chars is ~250k tokens: far over any
    # context this project trains, so only runaway input hits it.
    max_text_chars: int = Field(default=1_000_000, ge=1)
    max_batch_texts: int = Field(default=1024, ge=1)
    max_ids: int = Field(default=1_000_000, ge=1, description="ids per Decode / DecodeStream request")
    # Counts, not only characters: two million empty parts pass every character limit. The
    # gateway sends at most 256 messages of 64 parts; these leave room above that.
    max_conversation_messages: int = Field(default=1024, ge=1)
    max_conversation_parts: int = Field(default=16_384, ge=1, description="all messages' parts together")
    # At shutdown, health turns NOT_SERVING and new RPCs are still taken for drain_s, so a load
    # balancer can take the pod out of rotation first (a cluster sets a few seconds); then
    # in-flight RPCs get grace_s to finish.
    drain_s: float = Field(default=0.0, ge=0)
    grace_s: float = Field(default=5.0, ge=0)
    reload_enabled: bool = Field(default=True, description="allow the Reload admin RPC")
    # Reload swaps what every caller's ids mean, so it is an admin's: with a token, a caller sends
    # `authorization: Bearer <token>`; without one, Reload is refused unless the server listens on
    # loopback only (one machine, development). SIGHUP reloads either way.
    admin_token: str = Field(default="", description="the Reload RPC's credential; empty: loopback only")

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, token: str) -> str:
        if token and len(token) < 16:
            raise ValueError("an admin token needs at least 16 characters (or none: Reload on loopback only)")
        return token

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, explicit `overrides` (CLI flags, tests) winning; None means unset."""
    return load_settings_of(Settings, "tokenizer service", ENV_PREFIX, overrides)
