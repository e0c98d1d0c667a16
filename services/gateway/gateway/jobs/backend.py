"""What the job service needs of a backend: submit, poll, stop, logs. Errors are `BackendError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.jobs.spec import JobRecord

# Ray's JobStatus values -> the jobs API's states; a KubeRay RayJob's status.jobStatus carries the same.
RAY_JOB_STATES = {
    "PENDING": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "STOPPED": "cancelled",
}


class BackendError(RuntimeError):
    """The backend refused or could not be reached; the message says which and why."""


class JobGone(BackendError):
    """The backend has no such job (deleted, or a cluster that was replaced)."""


@dataclass(frozen=True)
class BackendStatus:
    state: str  # one of spec.STATES
    message: str = ""


class JobBackend(Protocol):
    name: str

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        """Start the job; returns the backend's reference for it (submission id, object name)."""
        ...

    def status(self, record: JobRecord) -> BackendStatus: ...

    def stop(self, record: JobRecord) -> None: ...

    def logs(self, record: JobRecord) -> str: ...

    def close(self) -> None: ...
