"""A job backend that runs each job as a local process: the JobBackend protocol's smallest real
implementation, so the UI's job pages are tested against real processes without starting Ray."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from pathlib import Path

from gateway.jobs.backend import BackendStatus
from gateway.jobs.spec import JobRecord

from chatforge.contracts.jobs import JobSpec


class ProcessBackend:
    name = "process"

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped: set[str] = set()

    def fit(self, spec: JobSpec) -> JobSpec:
        return spec  # the job's own flags: one process either way

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        with open(self._log(record), "wb") as log:
            proc = subprocess.Popen(
                shlex.split(record.entrypoint),
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stop() signals the job's whole process group
            )
        self._procs[record.id] = proc
        return str(proc.pid)

    def status(self, record: JobRecord) -> BackendStatus:
        proc = self._procs.get(record.id)
        if proc is None:
            return BackendStatus("failed", "not started by this backend")
        code = proc.poll()
        if code is None:
            return BackendStatus("running")
        if record.id in self._stopped:
            return BackendStatus("cancelled")
        return BackendStatus("succeeded") if code == 0 else BackendStatus("failed", f"exit code {code}")

    def stop(self, record: JobRecord) -> None:
        proc = self._procs.get(record.id)
        if proc is not None and proc.poll() is None:
            self._stopped.add(record.id)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)

    def logs(self, record: JobRecord) -> str:
        path = self._log(record)
        return path.read_text(errors="replace") if path.is_file() else ""

    def close(self) -> None:
        for record_id, proc in self._procs.items():
            if proc.poll() is None:
                self._stopped.add(record_id)
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)

    def _log(self, record: JobRecord) -> Path:
        return self.log_dir / f"{record.id}.log"
