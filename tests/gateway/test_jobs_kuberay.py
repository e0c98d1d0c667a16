"""The kuberay backend: RayJobs created through the real kubernetes client against the emulator,
validated against KubeRay's CRD; status followed, cancel deletes the object."""

from __future__ import annotations

import time

import httpx
import jsonschema
import pytest
from gateway.jobs.kuberay import rayjob_manifest
from gateway.jobs.spec import JobRecord

from tests.gateway.conftest import settings_for
from tests.gateway.kube_emulator import rayjob_schema

NS = "chatforge-test"


def _object(kube, job_id: str) -> dict:
    return kube.objects[(NS, f"chatforge-{job_id}")]


def _set_status(kube, job_id: str, **status) -> None:
    r = httpx.patch(
        f"{kube.url}/apis/ray.io/v1/namespaces/{NS}/rayjobs/chatforge-{job_id}/status",
        json={"status": status},
    )
    assert r.status_code == 200, r.text


def test_manifest_validates_against_the_crd(kube, artifacts, redis_url):
    settings = settings_for(artifacts, redis_url, kube_gpu_workers=2, kube_gpus_per_worker=4)
    record = JobRecord(id="job-abc123", stage="base", run="r1", config={}, backend="kuberay",
                       entrypoint="chatforge train base --run r1 --job-id job-abc123", owner="local")  # fmt: skip
    manifest = rayjob_manifest(record, {"REDIS_URL": "redis://redis:6379/0"}, settings)
    jsonschema.Draft7Validator(rayjob_schema()).validate(manifest)
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 3600
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert "REDIS_URL" in spec["runtimeEnvYAML"]
    assert workers["template"]["spec"]["volumes"] == []  # no claim set: nothing mounted

    # with the artifact store's claim, every pod mounts it where CHATFORGE_ARTIFACTS points
    settings = settings_for(artifacts, redis_url, kube_artifacts_claim="chatforge-artifacts")
    mounted = rayjob_manifest(record, {"CHATFORGE_ARTIFACTS": settings.artifacts_root}, settings)
    jsonschema.Draft7Validator(rayjob_schema()).validate(mounted)
    cluster = mounted["spec"]["rayClusterSpec"]
    for pod in (
        cluster["headGroupSpec"]["template"]["spec"],
        cluster["workerGroupSpecs"][0]["template"]["spec"],
    ):
        assert pod["volumes"] == [
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": "chatforge-artifacts"}}
        ]
        assert pod["containers"][0]["volumeMounts"] == [
            {"name": "artifacts", "mountPath": settings.artifacts_root}
        ]
    broken = {**manifest, "spec": {**spec, "shutdownAfterJobFinishes": "yes"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(rayjob_schema()).validate(broken)


def test_submit_follow_and_cancel(gateway, kube):
    r = httpx.post(
        gateway.url + "/v1/jobs",
        json={"stage": "sft", "run": "kr", "config": {"num_steps": 5, "gpu": True}},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["backend"] == "kuberay"
    obj = _object(kube, job["id"])  # the emulator validated it against the CRD on create
    assert obj["spec"]["entrypoint"] == job["entrypoint"]
    assert "--num-steps 5" in job["entrypoint"] and "--gpu" in job["entrypoint"]
    assert job["config"] == {"num_steps": 5, "gpu": True}
    assert f"--job-id {job['id']}" in job["entrypoint"]

    _set_status(kube, job["id"], jobStatus="RUNNING", jobDeploymentStatus="Running")
    got = httpx.get(gateway.url + f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "running" and got["started"] is not None

    r = httpx.post(gateway.url + f"/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    assert (NS, f"chatforge-{job['id']}") not in kube.objects
    again = httpx.post(gateway.url + f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_finished"


def test_finished_states_and_listing(gateway, kube):
    ids = [httpx.post(gateway.url + "/v1/jobs", json={"stage": s}).json()["id"] for s in ("base", "mid")]
    _set_status(kube, ids[0], jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    _set_status(kube, ids[1], jobStatus="FAILED", jobDeploymentStatus="Failed", message="OOM")
    states = {i: httpx.get(gateway.url + f"/v1/jobs/{i}").json() for i in ids}
    assert states[ids[0]]["state"] == "succeeded" and states[ids[0]]["finished"] is not None
    assert states[ids[1]]["state"] == "failed" and states[ids[1]]["message"] == "OOM"
    listed = [j["id"] for j in httpx.get(gateway.url + "/v1/jobs").json()["data"]]
    assert listed[:2] == ids[::-1]  # newest first
    logs = httpx.get(gateway.url + f"/v1/jobs/{ids[0]}/logs")
    assert logs.status_code == 200 and "kubectl logs" in logs.text


def test_watcher_reconciles_without_a_request(gateway, kube):
    job_id = httpx.post(gateway.url + "/v1/jobs", json={"stage": "pipeline"}).json()["id"]
    _set_status(kube, job_id, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if gateway.state.jobs.store.get(job_id).state == "succeeded":
            break
        time.sleep(0.2)
    assert gateway.state.jobs.store.get(job_id).state == "succeeded"


def test_invalid_job_requests(gateway):
    """A job's config is checked against the stage's typed flags and the trainer's own config rules
    before anything starts: a 400 naming the field, and no job."""
    before = len(gateway.state.jobs.recent(1000))
    for body, param in (
        ({"stage": "bake"}, "stage"),
        ({"stage": "base", "run": "../x"}, "run"),
        ({"stage": "base", "config": {"Num Steps": 1}}, "config.Num Steps"),
        ({"stage": "base", "config": {"job_id": "x"}}, "config.job_id"),
        ({"stage": "base", "config": {"depth": [1, 2]}}, "config.depth"),
        ({"stage": "base", "config": {"depth": "abc"}}, "config.depth"),
        ({"stage": "base", "config": {"depth": "2"}}, "config.depth"),
        ({"stage": "base", "config": {"no_such_flag": 1}}, "config.no_such_flag"),
        ({"stage": "base", "config": {"total_batch_tokens": 1000}}, "config.total_batch_tokens"),
        ({"stage": "rl", "config": {"lr_frac": 2.0}}, "config.lr_frac"),
        ({"stage": "base", "config": []}, "config"),
        ({"stage": "base", "extra": 1}, "extra"),
    ):
        r = httpx.post(gateway.url + "/v1/jobs", json=body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["param"] == param and error["message"].startswith(f"{param}: "), (body, error)
    r = httpx.post(gateway.url + "/v1/jobs", json={"stage": "base", "config": {"total_batch_tokens": 1000}})
    assert "must be a multiple of --device-batch-rows x --sequence-len" in r.json()["error"]["message"]
    assert len(gateway.state.jobs.recent(1000)) == before  # nothing was submitted


def test_job_artifacts_list_its_runs_checkpoints(gateway):
    job = httpx.post(gateway.url + "/v1/jobs", json={"stage": "pipeline", "run": "tiny"}).json()
    artifacts = httpx.get(gateway.url + f"/v1/jobs/{job['id']}/artifacts").json()["data"]
    assert {a["name"] for a in artifacts} == {"tiny/sft/step_000001", "tiny/mid/step_000001"}
    assert {a["name"]: a["metrics"] for a in artifacts}["tiny/sft/step_000001"] == {"val_loss": 2.5}
    other = httpx.post(gateway.url + "/v1/jobs", json={"stage": "base", "run": "fresh"}).json()
    assert httpx.get(gateway.url + f"/v1/jobs/{other['id']}/artifacts").json()["data"] == []


def test_events_stream_live_from_redis(gateway, kube, redis_server):
    """The trainer XADDs to the job's stream; the SSE endpoint relays it, resumes after an id, and
    ends once the job has ended and the stream is drained."""
    import json as _json
    import threading

    from chatforge.contracts.events import (
        EVENTS_MAXLEN,
        JobStateEvent,
        ProgressEvent,
        job_events_stream,
        stream_entry,
    )

    job_id = httpx.post(gateway.url + "/v1/jobs", json={"stage": "base", "run": "ev"}).json()["id"]

    def progress(step: int) -> ProgressEvent:
        return ProgressEvent(
            stage="base", step=step, loss=1.0 / step, lr=0.02, tokens_per_s=1.0, mfu=0.0, eta_s=0.0
        )

    def trainer() -> None:
        for step in range(1, 6):
            event = progress(step)
            redis_server.xadd(job_events_stream(job_id), stream_entry(event), maxlen=EVENTS_MAXLEN)
            time.sleep(0.1)
        # a later trainer's event (a newer version) is passed on as written, not dropped
        future = {"type": "progress", "version": 99, "step": 6, "novel": True}
        redis_server.xadd(job_events_stream(job_id), {"type": "progress", "data": _json.dumps(future)})
        _set_status(kube, job_id, jobStatus="SUCCEEDED", jobDeploymentStatus="Complete")

    writer = threading.Thread(target=trainer)
    writer.start()
    with httpx.stream("GET", gateway.url + f"/v1/jobs/{job_id}/events", timeout=30) as r:
        blocks = [b for b in r.read().decode().split("\n\n") if b]
    writer.join()
    data = [_json.loads(b.split("data: ", 1)[1]) for b in blocks]
    assert [d["step"] for d in data if d.get("type") == "progress"] == [1, 2, 3, 4, 5, 6]
    assert data[1] == progress(1).model_dump()  # relayed through the contract's model
    assert {"type": "progress", "version": 99, "step": 6, "novel": True} in data
    assert data[0] == JobStateEvent(state="queued").model_dump() == {
        "type": "state", "version": 1, "state": "queued", "message": "",
    }  # fmt: skip
    assert JobStateEvent(state="succeeded").model_dump() in data
    assert blocks[-1].startswith("event: end")
    ids = [b.split("\n")[0][4:] for b in blocks if b.startswith("id: ")]
    resumed = httpx.get(
        gateway.url + f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": ids[2]}, timeout=30
    ).text
    assert [
        _json.loads(b.split("data: ", 1)[1]).get("step") for b in resumed.split("\n\n") if "progress" in b
    ] == [4, 5, 6]
    assert 0 < redis_server.ttl(job_events_stream(job_id))  # a finished job's events expire
