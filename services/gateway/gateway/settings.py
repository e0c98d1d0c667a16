"""The gateway's one Settings object, read from the environment and validated at start.

Every field is `CHATFORGE_GATEWAY_<FIELD>` in the environment (e.g. `CHATFORGE_GATEWAY_PORT`), except
the artifact store's root (`CHATFORGE_ARTIFACTS`) and Redis (`REDIS_URL`), which every chatforge
process shares. The CLI's flags override the environment; the defaults live here only.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatforge.artifacts import DEFAULT_ROOT
from chatforge.contracts.generate import DEFAULT_PORT as INFERENCE_PORT
from chatforge.settings import SettingsError as SettingsError  # re-exported: callers catch it from here
from chatforge.settings import load_settings as load_settings_of

ENV_PREFIX = "CHATFORGE_GATEWAY_"
DEV_PEPPER = "chatforge-dev-pepper"
MIB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # --- listening ---------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", min_length=1, description="a pod sets 0.0.0.0")
    port: int = Field(default=8000, ge=0, le=65535)
    web_dir: str = Field(default="web", description="static UI served at / when the folder exists")

    # --- where the other services are -------------------------------------------------------
    artifacts_root: str = Field(
        default=DEFAULT_ROOT, validation_alias=AliasChoices("artifacts_root", "CHATFORGE_ARTIFACTS")
    )
    redis_url: str = Field(
        default="", validation_alias=AliasChoices("redis_url", "REDIS_URL"), description="empty: embedded"
    )
    # "local": tokenizer and engine in this process (one machine); "remote": the gRPC tokenizer
    # service and the Ray Serve inference app.
    mode: Literal["local", "remote"] = "local"
    tokenizer_target: str = "127.0.0.1:50051"
    tokenizer_name: str = Field(
        default="", description="local mode: tokenizer in the artifact store (default: the checkpoint's)"
    )
    inference_url: str = Field(
        default=f"http://127.0.0.1:{INFERENCE_PORT}", description="remote mode: the Serve app"
    )
    # A deployment rewrites the Serve deployment's user_config where the cluster keeps its config
    # (gateway/deployer.py): the chart's RayService on Kubernetes, else Serve's REST API.
    serve_admin_url: str = Field(
        default="",
        description="remote mode: the Serve cluster's Ray dashboard (http://host:8265) for deployments",
    )
    kube_rayservice: str = Field(
        default="",
        description="remote mode on Kubernetes: the RayService whose serveConfigV2 deployments patch",
    )
    serve_app: str = Field(default="inference", min_length=1, description="the Serve application's name")
    serve_deployment: str = Field(
        default="inference", min_length=1, description="the engine's Serve deployment in that application"
    )
    deploy_timeout_s: float = Field(
        default=900.0, gt=0, description="how long every replica may take to load a checkpoint"
    )
    sandbox_url: str = Field(default="", description="local mode: the sandbox service for python tool calls")
    checkpoint: str = Field(default="", description="local mode: checkpoint served at start (run/stage)")
    # Who turns generated ids into text; both run chatforge.detokenize.StreamDecoder. "engine": the
    # text the engine streams with each id (when its model has a tokenizer; no extra hop);
    # "tokenizer": the tokenizer service's DecodeStream, one RPC per piece (bench/gateway.py shows
    # the cost: several times fewer tokens/s at 32+ streams on 2 cores).
    detokenize: Literal["engine", "tokenizer"] = "engine"
    model_id: str = Field(default="chatforge", min_length=1, max_length=128)

    # --- auth ------------------------------------------------------------------------------
    # "auto": keys required unless bound to loopback; "required"/"off" force it either way.
    auth: Literal["auto", "required", "off"] = "auto"
    # Mixed into every key hash so a leaked Redis dump cannot be checked against guessed keys.
    key_pepper: str = Field(default=DEV_PEPPER, min_length=8)

    # --- limits -------------------------------------------------------------------------------
    # Every limit is checked before the work it bounds, and answers 400 (a count or size in the
    # body), 413 (the body itself, a stored document) or 429 (a rate) naming the setting. The table
    # with the reasons is docs/limits.md; the OpenAPI document carries the values.
    # Request bodies are counted while they stream (Content-Length or chunked), before they are
    # parsed and after the API key is checked. 2 MiB holds max_total_chars even written as \uXXXX
    # escapes for ASCII (6 bytes a character would be 1.5 MB).
    max_body_bytes: int = Field(default=2 * MIB, ge=64 * 1024)
    rate_requests_per_min: float = Field(default=120.0, gt=0, description="per key, bucket refill")
    rate_request_burst: int = Field(default=30, ge=1)
    rate_tokens_per_min: float = Field(default=200_000.0, gt=0, description="prompt + max_tokens")
    rate_token_burst: int = Field(default=50_000, ge=1)
    # Writes (conversations, jobs, deployments, keys) share their own bucket per key: a UI that
    # saves a conversation after every reply stays far below it; a loop filling Redis does not.
    rate_writes_per_min: float = Field(default=120.0, gt=0)
    rate_write_burst: int = Field(default=60, ge=1)
    max_messages: int = Field(default=256, ge=1, le=100_000)
    max_parts_per_message: int = Field(
        default=64, ge=1, le=100_000, description="content parts of one message"
    )
    max_total_parts: int = Field(default=4096, ge=1, description="content parts of all messages together")
    max_message_chars: int = Field(default=64_000, ge=1)
    max_total_chars: int = Field(default=256_000, ge=1)
    max_tokens_limit: int = Field(default=4096, ge=1, description="largest max_tokens a request may ask")
    max_n: int = Field(default=4, ge=1, le=128, description="largest n (choices) per request")
    # Generations in flight and waiting; past both a request gets 503 at once instead of hanging.
    max_concurrent_generations: int = Field(default=128, ge=1)
    max_queued_generations: int = Field(default=256, ge=0)
    queue_timeout_s: float = Field(default=30.0, gt=0)

    # --- conversations -----------------------------------------------------------------------
    # Stored documents are bounded in size and shape, not in which keys they hold: the UI keeps
    # its own per-message fields (alternatives, branches) beside role and content.
    conversation_ttl_s: int = Field(default=30 * 86400, ge=60)
    max_conversations_per_key: int = Field(default=500, ge=1)
    max_conversation_bytes: int = Field(default=1 * MIB, ge=1024, description="one stored document, as JSON")
    max_conversation_bytes_per_key: int = Field(
        default=64 * MIB, ge=1024, description="all of a key's conversations; the oldest go first"
    )
    max_conversation_messages: int = Field(default=1000, ge=1)
    max_conversation_depth: int = Field(default=32, ge=2, description="nesting of arrays and objects")
    max_conversation_keys: int = Field(default=50_000, ge=1, description="object keys in one document")
    max_title_chars: int = Field(default=200, ge=1)

    # --- jobs --------------------------------------------------------------------------------
    job_backend: Literal["local", "ray", "kuberay"] = "local"
    ray_address: str = Field(default="", description="ray: the cluster's dashboard URL (http://host:8265)")
    ray_temp_dir: str = Field(
        default="", max_length=60, description="local Ray's temp dir; empty: a new one in /tmp"
    )
    job_command: str = Field(default="chatforge train", description="what a job runs; stage and flags follow")
    job_ttl_s: int = Field(default=30 * 86400, ge=60, description="finished job records expire after this")
    max_jobs_listed: int = Field(default=1000, ge=1, description="cap on the job index")
    kube_namespace: str = "chatforge"
    kube_image: str = "chatforge/trainer:latest"
    kube_ray_version: str = "2.60.0"  # = pyproject's Ray pin (tests/platform/test_images_lock.py)
    kube_clusters_file: str = Field(
        default="",
        description="kuberay: the job clusters file (worker shapes by preset, placement, security; "
        "gateway/jobs/job_clusters.py); empty: its defaults",
    )
    kube_ttl_after_finished_s: int = Field(default=3600, ge=0)
    kube_active_deadline_s: int = Field(default=7 * 86400, ge=1)
    kube_config: str = Field(default="", description="kubeconfig path; empty: in-cluster config")
    kube_artifacts_claim: str = Field(
        default="",
        description="PersistentVolumeClaim mounted at the artifact root in every job pod (ReadWriteMany); "
        "empty: none, and a job's checkpoints stay inside its pods",
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.job_backend == "ray" and not self.ray_address:
            raise ValueError("job_backend 'ray' needs ray_address (CHATFORGE_GATEWAY_RAY_ADDRESS)")
        if self.max_conversation_bytes > self.max_conversation_bytes_per_key:
            raise ValueError("max_conversation_bytes is above max_conversation_bytes_per_key")
        if self.auth_required and self.key_pepper == DEV_PEPPER:
            raise ValueError(
                "API keys are required here but the key pepper is the development default: "
                "set CHATFORGE_GATEWAY_KEY_PEPPER to a secret"
            )
        return self

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def auth_required(self) -> bool:
        return self.auth == "required" or (self.auth == "auto" and not self.loopback)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, explicit `overrides` (CLI flags, tests) winning; None means unset."""
    return load_settings_of(Settings, "gateway", ENV_PREFIX, overrides)
