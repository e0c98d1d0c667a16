"""Which gateway follows a job, and what the next one does when that gateway is gone: adopt a job the
backend still runs, end one it does not (stopping its leftover session), never touch one a live
gateway follows. Two `JobService`s share a real Redis; the backend is a stand-in speaking the
`JobBackend` protocol whose jobs outlive gateways (a cluster's), or are gone (a local Ray's)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from gateway import redis_keys
from gateway.instance import GatewayInstance
from gateway.jobs.backend import BackendStatus, JobGone
from gateway.jobs.service import JobEnv, JobService
from gateway.jobs.spec import JobRecord
from gateway.jobs.store import JobStore

from chatforge.artifacts import ArtifactStore
from chatforge.contracts.jobs import JobSpec
from chatforge.lifetime import ProcessRef


class ClusterBackend:
    """Jobs that outlive any gateway: `running` until told otherwise; `gone` ones raise JobGone."""

    name = "cluster"
    jobs_end_with_gateway = False

    def __init__(self) -> None:
        self.states: dict[str, str] = {}
        self.gone: set[str] = set()

    def fit(self, spec: JobSpec) -> JobSpec:
        return spec

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        self.states[record.id] = "running"
        return record.id

    def status(self, record: JobRecord) -> BackendStatus:
        if record.id in self.gone:
            raise JobGone(f"the cluster has no job {record.id}")
        return BackendStatus(self.states[record.id])

    def stop(self, record: JobRecord) -> None:
        self.states[record.id] = "cancelled"

    def logs(self, record: JobRecord) -> str:
        return ""

    def close(self) -> None:
        return None


@pytest.fixture
def services(redis_server, tmp_path):  # type: ignore[no-untyped-def]
    backend = ClusterBackend()
    max_jobs = 10_000  # the session's Redis holds other tests' jobs too

    def service(ttl_s: int = 15) -> JobService:
        store = JobStore(redis_server, ttl_s=3600, max_jobs=max_jobs)
        return JobService(
            store, backend, command="true", env=JobEnv("", str(tmp_path)), artifacts=ArtifactStore(tmp_path),
            instance=GatewayInstance(redis_server, ttl_s=ttl_s),
        )  # fmt: skip

    return service, backend


def submit(service: JobService) -> JobRecord:
    return service.submit(
        JobSpec.model_validate({"stage": "base", "run": f"r{uuid.uuid4().hex[:6]}"}), "local"
    )


def test_a_job_followed_by_a_live_gateway_is_left_to_it(services):
    service, _ = services
    first, second = service(), service()
    job = submit(first)
    second.reconcile()
    assert first.store.get(job.id).gateway == first.instance.id


def test_a_gone_gateways_running_job_is_adopted(services):
    service, backend = services
    first, second = service(), service()
    job = submit(first)
    first.instance.release()  # a clean stop: the lease goes at once
    second.reconcile()
    adopted = second.store.get(job.id)
    assert adopted.gateway == second.instance.id and adopted.state == "running" and adopted.started
    backend.states[job.id] = "succeeded"  # and it is followed from then on
    second.reconcile()
    assert second.store.get(job.id).state == "succeeded"


def test_a_gateway_killed_on_this_host_is_known_dead_before_its_lease_expires(services, redis_server):
    service, _ = services
    first, second = service(ttl_s=3600), service()
    job = submit(first)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    ref = ProcessRef.of(dead.pid)
    dead.wait()
    assert ref is not None and not ref.running()
    # the first gateway's lease now names a process that has died (as after a SIGKILL)
    redis_server.set(redis_keys.gateway(first.instance.id), json.dumps(ref.to_dict()), ex=3600)
    second.reconcile()
    assert second.store.get(job.id).gateway == second.instance.id


def test_a_job_the_backend_lost_is_ended_with_its_leftover_session(services, redis_server):
    service, backend = services
    first, second = service(), service()
    job = submit(first)
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    ref = ProcessRef.of(leftover.pid)
    assert ref is not None
    redis_server.set(redis_keys.job_process(job.id), json.dumps(ref.to_dict()))
    redis_server.xadd(redis_keys.job_events(job.id), {"data": "{}"})
    backend.gone.add(job.id)
    first.instance.release()
    started = time.monotonic()
    second.reconcile()
    assert leftover.wait(10) is not None and time.monotonic() - started < 10
    ended = second.store.get(job.id)
    assert ended.state == "failed" and ended.finished and ended.started  # started: its first event
    assert "the cluster has no job" in ended.message and first.instance.id in ended.message
    assert f"session {leftover.pid}" in ended.message
    assert redis_server.get(redis_keys.job_process(job.id)) is None
