"""Jobs on a Ray cluster through the Ray Jobs REST API (the dashboard's `/api/jobs/`), over httpx.

`local`: a Ray instance on this machine, on loopback (a head started here through
`chatforge.raylocal.start_head` when no address is given); `ray`: a remote cluster's dashboard
address. The submission id is the gateway's job id, so a restarted gateway finds its jobs again.

A Ray head started here is this gateway's child and goes with it (`chatforge.lifetime`), and so
do its jobs: on this machine each job runs under `python -m chatforge.jobrun`, which ends the job's
whole session when Ray's supervisor goes. A later gateway therefore finds no such job (`JobGone`)
and ends what its predecessor started (`JobService`); jobs on a cluster outlive the gateway, and a
later gateway adopts them.

The REST API is what Ray's own `JobSubmissionClient` calls (documented with the Ray Jobs REST API);
talking to it directly keeps Ray out of the gateway image: only the `local` backend, which starts a
Ray, imports ray, and only when it starts one. A cluster with Ray's token authentication (the
default for a local `ray.init` since Ray 2.5x) is sent its token the way Ray's clients find it:
`RAY_AUTH_TOKEN`, else the file named by `RAY_AUTH_TOKEN_PATH`, else `~/.ray/auth_token`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from chatforge.contracts.jobs import JobSpec
from chatforge.raylocal import RayHead
from gateway.jobs.backend import RAY_JOB_STATES, BackendError, BackendStatus, JobGone
from gateway.jobs.spec import JobRecord

log = logging.getLogger(__name__)

AGENT_WAIT_S = 30.0
HTTP_TIMEOUT_S = 30.0  # one Jobs API call (a submission waits for the job to be recorded)


class RayJobsBackend:
    """`address`: a running cluster's dashboard URL; empty: start a local Ray on first use.

    Starting Ray lazily keeps the gateway's start fast and Ray-free until a job is submitted. A local
    Ray started here lives as long as this process: on one machine, jobs end with the gateway
    (`jobs_end_with_gateway`); a cluster's jobs outlive it.
    """

    def __init__(self, address: str = "", *, name: str = "ray", local_temp_dir: str = ""):
        self.name = name
        self.address = address
        self.local_temp_dir = local_temp_dir
        self._client: httpx.Client | None = None
        self._head: RayHead | None = None
        self._submitted: set[str] = set()  # jobs this process put on a Ray it started
        self._lock = threading.Lock()

    @property
    def jobs_end_with_gateway(self) -> bool:
        """True when this gateway starts its own Ray, which (with its jobs) ends when it does."""
        return not self.address

    def fit(self, spec: JobSpec) -> JobSpec:
        """As requested: a Ray cluster's workers and GPUs are the job's flags to choose."""
        return spec

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        entrypoint = record.entrypoint
        if self.name == "local":  # this machine: the job's processes live and die together
            wrapper = [sys.executable, "-m", "chatforge.jobrun", "--job-id", record.id, "--"]
            entrypoint = f"{shlex.join(wrapper)} {entrypoint}"
        request = {
            "entrypoint": entrypoint,
            "submission_id": record.id,
            "runtime_env": {"env_vars": env},
            "metadata": {"chatforge_job": record.id, "stage": record.stage, "run": record.run},
        }
        # A fresh cluster's dashboard answers before its job agent is up ("No available agent");
        # that clears within seconds, so it is retried rather than failing the job.
        deadline = time.monotonic() + AGENT_WAIT_S
        while True:
            r = self._call("POST", "/api/jobs/", "Ray refused the job", json=request)
            if r.status_code == 200:
                self._submitted.add(record.id)
                return str(r.json().get("submission_id") or record.id)
            if "No available agent" in r.text and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise BackendError(f"Ray refused the job: {_failure(r)}")

    def status(self, record: JobRecord) -> BackendStatus:
        self._check_ours(record)
        job = record.backend_ref or record.id
        r = self._call("GET", f"/api/jobs/{_quote(job)}", f"cannot read job {record.id} from Ray")
        if r.status_code == 404:
            raise JobGone(f"Ray has no job {record.id} (a new cluster, or the job was deleted)")
        if r.status_code != 200:
            raise BackendError(f"cannot read job {record.id} from Ray: {_failure(r)}")
        info = r.json()
        state = RAY_JOB_STATES.get(str(info.get("status")), "queued")
        return BackendStatus(state, info.get("message") or "")

    def stop(self, record: JobRecord) -> None:
        self._check_ours(record)
        job = record.backend_ref or record.id
        r = self._call("POST", f"/api/jobs/{_quote(job)}/stop", f"Ray could not stop job {record.id}")
        if r.status_code != 200:
            raise BackendError(f"Ray could not stop job {record.id}: {_failure(r)}")

    def logs(self, record: JobRecord) -> str:
        self._check_ours(record)
        job = record.backend_ref or record.id
        what = f"cannot read the logs of job {record.id} from Ray"
        r = self._call("GET", f"/api/jobs/{_quote(job)}/logs", what)
        if r.status_code != 200:
            raise BackendError(f"{what}: {_failure(r)}")
        return str(r.json().get("logs") or "")

    def _check_ours(self, record: JobRecord) -> None:
        """A Ray started here holds only the jobs this process submitted: any other ran on the Ray
        of an earlier gateway, which ended with it (no need to start a Ray to learn that)."""
        if self.jobs_end_with_gateway and record.id not in self._submitted:
            raise JobGone(
                f"job {record.id} ran on the local Ray of an earlier gateway, which stopped with that gateway"
            )

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        client = self._jobs()
        try:
            return client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise BackendError(f"{what}: {client.base_url} unreachable: {e!r}") from None

    def _jobs(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> httpx.Client:
        address = self.address
        if not address:
            from chatforge.raylocal import start_head

            if importlib.util.find_spec("ray") is None:  # the gateway image: a cluster address is needed
                raise BackendError(
                    "the local job backend starts a Ray head and needs ray installed; "
                    "give a cluster's dashboard address instead (CHATFORGE_GATEWAY_RAY_ADDRESS)"
                )
            temp = self.local_temp_dir or tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp")
            try:
                self._head = start_head(temp)
            except (OSError, RuntimeError, ValueError) as e:
                raise BackendError(f"could not start a local Ray for jobs: {e}") from None
            address = self._head.dashboard_url
            log.info(
                "started a local Ray head (pid %d) for jobs; its Jobs API is on %s",
                self._head.process.pid,
                address,
            )
        if "://" not in address:
            address = f"http://{address}"
        client = httpx.Client(
            base_url=address.rstrip("/"), timeout=HTTP_TIMEOUT_S, headers=ray_auth_headers()
        )
        try:  # what JobSubmissionClient checks first: the dashboard answers and serves the Jobs API
            r = client.get("/api/version")
            if r.status_code != 200:
                raise BackendError(f"cannot reach the Ray Jobs API at {address}: {_failure(r)}")
            log.info("Ray Jobs API at %s (Ray %s)", address, r.json().get("ray_version", "?"))
        except (httpx.HTTPError, ValueError) as e:
            client.close()
            raise BackendError(f"cannot reach the Ray Jobs API at {address}: {e!r}") from None
        except BackendError:
            client.close()
            raise
        return client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._head is not None:  # its jobs' wrappers end their sessions when their supervisors go
            self._head.stop()
            self._head = None


def ray_auth_headers() -> dict[str, str]:
    """`Authorization: Bearer <token>` when a Ray auth token is configured here (see the module doc)."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
        try:
            token = Path(path).read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _quote(job_id: str) -> str:
    return quote(job_id, safe="")


def _failure(r: httpx.Response) -> str:
    return f"HTTP {r.status_code}: {r.text.strip()[:500]}"
