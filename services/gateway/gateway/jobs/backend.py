"""What the job service needs of a backend: submit, poll, stop, logs. Errors are `BackendError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chatforge.contracts.jobs import JobSpec
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


class JobRejected(BackendError):
    """The job cannot run on what this backend provides (more GPUs than its cluster has); `param`
    names the request field to change. Answered as a 400."""

    def __init__(self, message: str, *, param: str):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class BackendStatus:
    state: str  # one of spec.STATES
    message: str = ""


class JobBackend(Protocol):
    name: str

    def fit(self, spec: JobSpec) -> JobSpec:
        """The spec as this backend runs it: flags its resources decide (Ray Train workers, GPUs)
        filled in where the request left them out; `JobRejected` when it cannot run."""
        ...

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        """Start the job; returns the backend's reference for it (submission id, object name)."""
        ...

    def status(self, record: JobRecord) -> BackendStatus: ...

    def stop(self, record: JobRecord) -> None: ...

    def logs(self, record: JobRecord) -> str: ...

    def close(self) -> None: ...
