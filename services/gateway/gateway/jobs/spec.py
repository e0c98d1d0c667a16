"""What a job is: the validated request (`JobRequest`), its record (`JobRecord`), its command line.

A job runs one training stage or the whole pipeline as `chatforge train <stage> --run <run>
--job-id <id> --<flag> <value> ...`: `config` holds flag values by their field names
(`num_steps`, `depth`, ...), validated here for shape (names, scalar values) and by the stage's own
CLI for meaning, where a bad value fails the job with the CLI's message in its logs.
"""

from __future__ import annotations

import re
import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What `chatforge train <stage>` runs (trainer/cli.py); "pipeline" is tokenizer -> base -> mid -> sft
# -> eval -> report; "eval" measures one stage's checkpoint (`config.stage`, default sft).
Stage = Literal["tokenizer", "base", "mid", "sft", "rl", "eval", "report", "pipeline"]
STAGES: tuple[str, ...] = get_args(Stage)
STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
_FLAG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# Set by the gateway itself; a request may not override them.
_RESERVED = frozenset({"run", "job_id"})

Scalar = bool | int | float | str


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Stage
    run: str = Field(default="demo", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    config: dict[str, Scalar] = Field(default_factory=dict, max_length=64)

    @field_validator("config")
    @classmethod
    def _flags(cls, config: dict[str, Scalar]) -> dict[str, Scalar]:
        for name, value in config.items():
            if not _FLAG.match(name):
                raise ValueError(f"config key {name!r} is not a flag name (lowercase letters, digits, '_')")
            if name in _RESERVED:
                raise ValueError(f"config key {name!r} is set by the gateway, not by the request")
            if isinstance(value, str) and (len(value) > 512 or "\x00" in value):
                raise ValueError(f"config[{name!r}] must be a string of at most 512 characters")
        return config


@dataclass
class JobRecord:
    id: str
    stage: str
    run: str
    config: dict[str, Any]
    backend: str
    entrypoint: str
    owner: str
    state: str = "queued"
    message: str = ""
    backend_ref: str = ""  # the Ray submission id or the RayJob's name
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_api(self) -> dict[str, Any]:
        return {"object": "job", **self.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def new_job_id() -> str:
    # Lowercase hex: the id is also part of a Kubernetes object name (DNS-1123).
    return "job-" + secrets.token_hex(6)


def entrypoint(command: str, request: JobRequest, job_id: str) -> str:
    """The shell command a backend runs for this job."""
    words = [*shlex.split(command), request.stage, "--run", request.run, "--job-id", job_id]
    for name, value in sorted(request.config.items()):
        flag = "--" + name.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            words.append("--no-" + name.replace("_", "-"))
        else:
            words += [flag, str(value)]
    return shlex.join(words)
