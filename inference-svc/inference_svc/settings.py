"""The inference service's one Settings object: the CLI, the Serve application and the gateway's
in-process mode all build it, from the environment, validated at start.

Every field is `CHATFORGE_INFERENCE_<FIELD>` in the environment (e.g. `CHATFORGE_INFERENCE_PORT`);
the engine's fields are nested, `CHATFORGE_INFERENCE_ENGINE__<FIELD>` (e.g.
`CHATFORGE_INFERENCE_ENGINE__MAX_NUM_SEQS`); the artifact store's root is `CHATFORGE_ARTIFACTS`,
as for every chatforge process. CLI flags and a Serve config file's `args` override the
environment; the defaults live here and in `EngineConfig` only.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatforge.artifacts import DEFAULT_ROOT
from chatforge.contracts.generate import DEFAULT_PORT
from chatforge.settings import SettingsError as SettingsError  # re-exported: callers catch it from here
from chatforge.settings import load_settings as load_settings_of
from inference_svc.config import EngineConfig

ENV_PREFIX = "CHATFORGE_INFERENCE_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    checkpoint: str = Field(min_length=1, description="artifact name run/stage[/step_N] or a directory")
    artifacts_root: str = Field(
        default=DEFAULT_ROOT,
        min_length=1,
        validation_alias=AliasChoices("artifacts_root", "CHATFORGE_ARTIFACTS"),
    )
    tokenizer: str | None = Field(default=None, description="override the tokenizer the checkpoint names")
    device: str | None = Field(default=None, description="cpu or cuda; default: cuda when present")
    sandbox_url: str | None = Field(default=None, description="the sandbox service; none: tools off")
    # 127.0.0.1 on one machine; a pod sets 0.0.0.0. The port differs from the gateway's (8000), so
    # both run on one machine with their defaults.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="Ray Serve's HTTP proxy")
    app_name: str = Field(default="inference", min_length=1, description="the Serve application's name")
    dashboard_port: int = Field(
        default=8265,
        ge=1,
        le=65535,
        description="a local Ray's dashboard (Serve's REST API, for deployments)",
    )
    ray_address: str | None = Field(default=None, description="join this Ray cluster; none: a local one")
    ray_temp_dir: str = Field(default="/tmp/chatforge-ray", max_length=60, description="local Ray's temp dir")
    # Serve scales replicas on ongoing requests per replica; one engine batches up to max_num_seqs.
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    target_ongoing_requests: int = Field(default=32, ge=1)
    max_ongoing_requests: int = Field(default=128, ge=1)
    num_cpus: float = Field(default=1.0, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @model_validator(mode="after")
    def _replicas(self) -> Settings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is over max_replicas {self.max_replicas}")
        return self

    def autoscaling_config(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, `overrides` (flags, Serve args, tests) winning; None means unset.

    Engine fields may be given flat (`num_blocks=64`, as a CLI flag or Serve arg) or as `engine=`.
    """
    engine_fields = set(EngineConfig.model_fields)
    flat = {k: overrides.pop(k) for k in list(overrides) if k in engine_fields}
    flat = {k: v for k, v in flat.items() if v is not None}
    if flat:
        engine = overrides.get("engine")
        base = engine.model_dump() if isinstance(engine, EngineConfig) else dict(engine or {})
        overrides["engine"] = {**base, **flat}
    return load_settings_of(Settings, "inference service", ENV_PREFIX, overrides)
