"""What a job is: its spec (`chatforge.contracts.jobs.JobSpec`), its record (`JobRecord`), its command line.

A job runs one training stage or the whole pipeline as `chatforge train <stage> --run <run>
--job-id <id> --<flag> <value> ...`. The request is a `JobSpec`: its `config` is validated against
the stage's flags, the same model `chatforge train` builds its flags from, and checked the way the
trainer checks it, so a bad value is a 400 naming the field instead of a failed job.
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from chatforge.contracts.jobs import JobSpec

STATES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


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
    gateway: str = ""  # the gateway instance that follows the job (gateway/instance.py)
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


def entrypoint(command: str, spec: JobSpec, job_id: str) -> str:
    """The shell command a backend runs for this job: `command` (`chatforge train` by default)
    followed by the spec's own arguments."""
    return shlex.join([*shlex.split(command), *spec.argv(job_id)])
