"""The sandbox's one Settings object, read from the environment and validated at start.

Every field is `CHATFORGE_SANDBOX_<FIELD>` in the environment (e.g. `CHATFORGE_SANDBOX_PORT`); the
CLI's flags override the environment; the defaults live here only. The in-process executor (used
by the inference engine without the HTTP hop) takes the same object.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatforge.settings import SettingsError as SettingsError  # re-exported: callers catch it from here
from chatforge.settings import load_settings as load_settings_of
from chatforge.tools import DEFAULT_MEMORY_MB, DEFAULT_OUTPUT_BYTES, DEFAULT_TIMEOUT_S, ToolLimits

ENV_PREFIX = "CHATFORGE_SANDBOX_"
DEFAULT_PORT = 8092
MIB = 1024 * 1024
NOBODY_UID = 65534  # host processes may run as nobody; cleanup by uid must never reach them

Mode = Literal["auto", "namespaces", "weak"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # 127.0.0.1 on one machine; a pod sets 0.0.0.0 so the cluster can reach it.
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535, description="0 picks a free port")
    # A port of its own for /metrics, so a cluster can let Prometheus scrape it without opening the
    # run API to it (the chart's NetworkPolicy); 0: /metrics on the API port only.
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus /metrics port (0: off)")
    # auto: namespaces (bubblewrap) when they work here, else the weak mode with a warning.
    # namespaces: refuse to start without them. weak: rlimits, uid drop and seccomp only.
    mode: Mode = "auto"
    bwrap_path: str = Field(default="bwrap", min_length=1)
    python_path: str = Field(default="", description="interpreter for snippets; empty picks one")

    # Two runs per core keeps the host responsive: a run is mostly interpreter start-up (~20 ms),
    # and each can burn a full core until its timeout.
    max_concurrent: int = Field(default=4, ge=1, le=256, description="runs executing at once")
    max_queue: int = Field(default=16, ge=0, le=4096, description="runs waiting beyond that; more get 'busy'")
    queue_timeout_s: float = Field(
        default=10.0, gt=0, description="a queued run gives up as 'busy' after this"
    )

    default_timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    default_memory_mb: int = Field(default=DEFAULT_MEMORY_MB, ge=64)
    default_output_bytes: int = Field(default=DEFAULT_OUTPUT_BYTES, ge=1)
    max_timeout_s: float = Field(default=60.0, gt=0)
    max_memory_mb: int = Field(default=2048, ge=64)
    max_output_bytes: int = Field(default=1 * MIB, ge=1)
    max_code_bytes: int = Field(default=256 * 1024, ge=1)

    max_processes: int = Field(default=32, ge=4, description="processes + threads per run (RLIMIT_NPROC)")
    max_open_files: int = Field(default=64, ge=16, description="RLIMIT_NOFILE per process")
    max_file_bytes: int = Field(default=16 * MIB, ge=0, description="RLIMIT_FSIZE: largest file a run writes")
    tmpfs_bytes: int = Field(
        default=32 * MIB, ge=MIB, description="size of each run's private /tmp (and /dev/shm)"
    )
    # A run's CPU quota, and its cgroups (cgroups.py): the quota, plus memory_mb and max_processes
    # for all the run's processes together. "off", or a host without a writable cgroup hierarchy,
    # pins each run to ceil(cpu_quota_cores) cores of its own instead.
    cpu_quota_cores: float = Field(default=1.0, gt=0, le=1024, description="CPU a run may use, in cores")
    cgroups: Literal["auto", "off"] = "auto"
    # When the service runs as root, each run slot executes as its own uid: runs cannot see or
    # signal each other, RLIMIT_NPROC counts one run only, and cleanup kills by uid. 50000 + 1024
    # stays inside a pod user namespace's mapped range (0-65535) and below nobody (65534).
    uid_base: int = Field(default=50_000, ge=1000, le=2**31 - 65536)
    # Run uids are leased from [uid_base, uid_base + uid_span) with lock files, so several
    # sandboxes on one host (the service, in-process executors, tests) never share one.
    uid_span: int = Field(default=1024, ge=1, le=65536)

    @model_validator(mode="after")
    def _check_consistent(self) -> Settings:
        for name in ("timeout_s", "memory_mb", "output_bytes"):
            if getattr(self, f"default_{name}") > getattr(self, f"max_{name}"):
                raise ValueError(f"default_{name} is above max_{name}")
        if self.uid_base <= NOBODY_UID < self.uid_base + self.uid_span:
            raise ValueError(
                f"run uids {self.uid_base}..+{self.uid_span} would include {NOBODY_UID} (nobody)"
            )
        if self.max_concurrent > self.uid_span:
            raise ValueError(
                f"max_concurrent {self.max_concurrent} needs that many run uids; uid_span is {self.uid_span}"
            )
        return self

    def default_limits(self) -> ToolLimits:
        return ToolLimits(self.default_timeout_s, self.default_memory_mb, self.default_output_bytes)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, explicit `overrides` (CLI flags, tests) winning; None means unset."""
    return load_settings_of(Settings, "sandbox", ENV_PREFIX, overrides)
