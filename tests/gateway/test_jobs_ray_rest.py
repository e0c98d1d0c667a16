"""The Ray Jobs backend speaks the dashboard's REST API itself (no Ray in the gateway image): each
call, the errors it maps, the agent-start retry and the auth token, against a stand-in dashboard.
The real thing is exercised end to end in test_jobs_ray.py."""

from __future__ import annotations

import json

import httpx
import pytest
from gateway.jobs import ray_jobs
from gateway.jobs.backend import BackendError, JobGone
from gateway.jobs.ray_jobs import RayJobsBackend
from gateway.jobs.spec import JobRecord


def _record(job_id: str = "job-1") -> JobRecord:
    return JobRecord(
        id=job_id, stage="base", run="r1", config={}, backend="ray", entrypoint="echo hi", owner="k"
    )


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    """Every request the backend sends, answered like Ray 2.x's job head does."""
    seen: list[httpx.Request] = []
    submits = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("authorization") != "Bearer s3cret":
            return httpx.Response(401, text="Unauthorized: Missing authentication token")
        path, method = request.url.path, request.method
        if path == "/api/version":
            return httpx.Response(200, json={"version": "4", "ray_version": "2.60.0"})
        if (method, path) == ("POST", "/api/jobs/"):
            submits["n"] += 1
            if submits["n"] == 1:  # a fresh cluster: the job agent is not up yet
                return httpx.Response(500, text="No available agent to submit job, please try again later.")
            body = json.loads(request.content)
            if body["submission_id"] == "taken":
                return httpx.Response(400, text="Job with submission_id taken already exists.")
            return httpx.Response(200, json={"job_id": "02000000", "submission_id": body["submission_id"]})
        if path.startswith("/api/jobs/gone"):
            return httpx.Response(404, text="Job gone does not exist")
        if (method, path) == ("GET", "/api/jobs/job-1"):
            return httpx.Response(200, json={"status": "RUNNING", "message": "Job is currently running."})
        if (method, path) == ("POST", "/api/jobs/job-1/stop"):
            return httpx.Response(200, json={"stopped": True})
        if (method, path) == ("GET", "/api/jobs/job-1/logs"):
            return httpx.Response(200, json={"logs": "hello\n"})
        return httpx.Response(500, text=f"unexpected {method} {path}")

    real_client = httpx.Client
    monkeypatch.setattr(
        ray_jobs.httpx, "Client", lambda **kw: real_client(transport=httpx.MockTransport(handle), **kw)
    )
    monkeypatch.setenv("RAY_AUTH_TOKEN", "s3cret")
    return seen


def test_submit_status_stop_logs_over_rest(dashboard: list[httpx.Request]) -> None:
    backend = RayJobsBackend("ray-head:8265")
    assert backend.submit(_record(), {"REDIS_URL": "redis://r:6379/0"}) == "job-1"
    submitted = json.loads(dashboard[-1].content)
    assert submitted == {
        "entrypoint": "echo hi",
        "submission_id": "job-1",
        "runtime_env": {"env_vars": {"REDIS_URL": "redis://r:6379/0"}},
        "metadata": {"chatforge_job": "job-1", "stage": "base", "run": "r1"},
    }
    assert str(dashboard[0].url) == "http://ray-head:8265/api/version"  # a bare host:port gets http://
    status = backend.status(_record())
    assert (status.state, status.message) == ("running", "Job is currently running.")
    backend.stop(_record())
    assert backend.logs(_record()) == "hello\n"
    backend.close()


def test_errors_are_named(dashboard: list[httpx.Request]) -> None:
    backend = RayJobsBackend("http://ray-head:8265/")
    backend.submit(_record(), {})  # past the agent wait
    with pytest.raises(JobGone, match="Ray has no job gone"):
        backend.status(_record("gone"))
    with pytest.raises(BackendError, match="could not stop job gone: HTTP 404"):
        backend.stop(_record("gone"))
    with pytest.raises(BackendError, match="Ray refused the job: HTTP 400: .*already exists"):
        backend.submit(_record("taken"), {})


def test_a_wrong_token_or_no_dashboard_is_a_backend_error(
    dashboard: list[httpx.Request], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong")
    with pytest.raises(BackendError, match="cannot reach the Ray Jobs API .*HTTP 401"):
        RayJobsBackend("http://ray-head:8265").submit(_record(), {})


def test_token_lookup_follows_rays_order(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert ray_jobs.ray_auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert ray_jobs.ray_auth_headers() == {"Authorization": "Bearer from-home"}
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert ray_jobs.ray_auth_headers() == {"Authorization": "Bearer from-path"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert ray_jobs.ray_auth_headers() == {"Authorization": "Bearer from-env"}


def test_unreachable_dashboard_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="cannot reach the Ray Jobs API at http://127.0.0.1:9"):
        RayJobsBackend("http://127.0.0.1:9").status(_record())


def test_local_backend_without_ray_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # the gateway image: ray cannot be imported
    with pytest.raises(BackendError, match="needs ray installed.*CHATFORGE_GATEWAY_RAY_ADDRESS"):
        RayJobsBackend("", name="local", local_temp_dir="/tmp/cf-none").submit(_record(), {})
