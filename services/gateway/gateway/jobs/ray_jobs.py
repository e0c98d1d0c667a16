"""Jobs on a Ray cluster through the Ray Jobs API (`JobSubmissionClient`, the dashboard's REST API).

`local`: a Ray instance on this machine, on loopback (started here through `chatforge.raylocal`
with its dashboard when no address is given); `ray`: a remote cluster's dashboard address.
The submission id is the gateway's job id, so a restarted gateway finds its jobs again.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from typing import Any

from gateway.jobs.backend import RAY_JOB_STATES, BackendError, BackendStatus, JobGone
from gateway.jobs.spec import JobRecord

log = logging.getLogger(__name__)

AGENT_WAIT_S = 30.0


class RayJobsBackend:
    """`address`: a running cluster's dashboard URL; empty: start a local Ray on first use.

    Starting Ray lazily keeps the gateway's start fast and Ray-free until a job is submitted (or an
    unfinished local job needs reconciling). A local Ray started here lives as long as this process:
    on one machine, jobs end with the gateway; a cluster's jobs outlive it.
    """

    def __init__(self, address: str = "", *, name: str = "ray", local_temp_dir: str = ""):
        self.name = name
        self.address = address
        self.local_temp_dir = local_temp_dir
        self._client: Any = None
        self._owns_ray = False
        self._lock = threading.Lock()

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        client = self._jobs()
        # A fresh cluster's dashboard answers before its job agent is up ("No available agent");
        # that clears within seconds, so it is retried rather than failing the job.
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            try:
                return client.submit_job(
                    entrypoint=record.entrypoint,
                    submission_id=record.id,
                    runtime_env={"env_vars": env},
                    metadata={"chatforge_job": record.id, "stage": record.stage, "run": record.run},
                )
            except Exception as e:
                if "No available agent" in str(e) and time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise BackendError(f"Ray refused the job: {e}") from None

    def status(self, record: JobRecord) -> BackendStatus:
        try:
            info: Any = self._jobs().get_job_info(record.backend_ref or record.id)
        except Exception as e:
            if "does not exist" in str(e):
                raise JobGone(f"Ray has no job {record.id} (a new cluster, or the job was deleted)") from None
            raise BackendError(f"cannot read job {record.id} from Ray: {e}") from None
        state = RAY_JOB_STATES.get(str(getattr(info.status, "value", info.status)), "queued")
        return BackendStatus(state, info.message or "")

    def stop(self, record: JobRecord) -> None:
        try:
            self._jobs().stop_job(record.backend_ref or record.id)
        except Exception as e:
            raise BackendError(f"Ray could not stop job {record.id}: {e}") from None

    def logs(self, record: JobRecord) -> str:
        try:
            return self._jobs().get_job_logs(record.backend_ref or record.id)
        except Exception as e:
            raise BackendError(f"cannot read the logs of job {record.id} from Ray: {e}") from None

    def _jobs(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        address = self.address
        if not address:
            from chatforge.raylocal import init_local_ray  # before any `import ray`: it sets the loopback env

            temp = self.local_temp_dir or tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp")
            context = init_local_ray(temp, include_dashboard=True, dashboard_host="127.0.0.1")
            self._owns_ray = True
            url = context.dashboard_url
            address = url if url.startswith("http") else f"http://{url}"
            log.info("started a local Ray for jobs; its Jobs API is on %s", address)
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(address)
        except Exception as e:  # ray raises ConnectionError or RuntimeError depending on the failure
            raise BackendError(f"cannot reach the Ray Jobs API at {address}: {e}") from None

    def close(self) -> None:
        if self._owns_ray:
            from chatforge.raylocal import shutdown_ray

            shutdown_ray()
