"""The kuberay backend: RayJobs created through the real kubernetes client against the emulator,
validated against KubeRay's CRD; each preset on its GPU shape with as many Ray Train workers as
GPUs; restricted pods and no secret in the spec; status followed, cancel deletes the object, logs
read from the submitter pod."""

from __future__ import annotations

import json
import re
import shlex
import time

import httpx
import jsonschema
import pytest
from gateway.jobs.backend import BackendError
from gateway.jobs.job_clusters import JobClusters
from gateway.jobs.kuberay import MAX_RAYJOB_NAME, fit_spec, object_name, rayjob_manifest
from gateway.jobs.spec import JobRecord

from chatforge.contracts.jobs import JobSpec
from tests.gateway.conftest import settings_for
from tests.gateway.kube_emulator import rayjob_schema
from tests.gateway.kube_pods import serve_pods

NS = "chatforge-test"


def _object(kube, job_id: str) -> dict:
    return kube.objects[(NS, f"chatforge-{job_id}")]


def _set_status(kube, job_id: str, **status) -> None:
    r = httpx.patch(
        f"{kube.url}/apis/ray.io/v1/namespaces/{NS}/rayjobs/chatforge-{job_id}/status",
        json={"status": status},
    )
    assert r.status_code == 200, r.text


def _record(stage: str = "base", config: dict | None = None, job_id: str = "job-abc123") -> JobRecord:
    spec = JobSpec.model_validate({"stage": stage, "run": "r1", "config": config or {}})
    spec = fit_spec(spec, JobClusters())
    return JobRecord(
        id=job_id, stage=stage, run="r1", config=spec.config.model_dump(mode="json", exclude_unset=True),
        backend="kuberay", entrypoint=shlex.join(["chatforge", "train", *spec.argv(job_id)]), owner="local",
    )  # fmt: skip


def test_manifest_validates_against_the_crd(kube, artifacts, redis_url):
    settings = settings_for(artifacts, redis_url)
    record = _record("base", {"preset": "d26"})
    manifest = rayjob_manifest(record, {"REDIS_URL": "redis://redis:6379/0"}, settings)
    jsonschema.Draft7Validator(rayjob_schema()).validate(manifest)
    spec = manifest["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 3600
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    pod = workers["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    # REDIS_URL is the pods' environment, not the runtime env written into the RayJob
    assert "REDIS_URL" not in spec["runtimeEnvYAML"]
    assert {"name": "REDIS_URL", "value": "redis://redis:6379/0"} in pod["containers"][0]["env"]
    # the job's Ray Train config asks for what the cluster has: 2 pods x 8 GPUs, one worker each
    assert "--workers 16" in record.entrypoint and "--gpu" in record.entrypoint

    # with the artifact store's claim, every pod mounts it where CHATFORGE_ARTIFACTS points
    settings = settings_for(artifacts, redis_url, kube_artifacts_claim="chatforge-artifacts")
    mounted = rayjob_manifest(record, {"CHATFORGE_ARTIFACTS": settings.artifacts_root}, settings)
    jsonschema.Draft7Validator(rayjob_schema()).validate(mounted)
    cluster = mounted["spec"]["rayClusterSpec"]
    for pod in (
        cluster["headGroupSpec"]["template"]["spec"],
        cluster["workerGroupSpecs"][0]["template"]["spec"],
    ):
        assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "chatforge-artifacts"}} in pod[
            "volumes"
        ]
        assert {"name": "artifacts", "mountPath": settings.artifacts_root} in pod["containers"][0][
            "volumeMounts"
        ]
    broken = {**manifest, "spec": {**spec, "shutdownAfterJobFinishes": "yes"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(rayjob_schema()).validate(broken)


@pytest.mark.parametrize(
    ("stage", "config", "workers", "gpus_per_pod", "argv"),
    [
        ("base", {}, 1, 0, ["--workers", "1"]),  # tiny: one CPU worker, no GPU asked for
        ("base", {"preset": "d12"}, 1, 1, ["--workers", "1", "--gpu"]),
        ("sft", {"preset": "d20"}, 1, 8, ["--workers", "8", "--gpu"]),
        ("mid", {"preset": "d26"}, 2, 8, ["--workers", "16", "--gpu"]),
        ("pipeline", {"preset": "d20"}, 1, 8, ["--workers", "8"]),
        ("rl", {}, 1, 1, ["--workers", "1", "--gpu"]),  # no preset: the default preset's cluster
        ("eval", {}, 1, 1, ["--workers", "1", "--gpu"]),
        ("rl", {"workers": None, "gpu": None}, 1, 1, ["--workers", "1", "--gpu"]),  # null is left out
    ],
)
def test_presets_land_on_their_gpu_shapes(
    kube, artifacts, redis_url, stage, config, workers, gpus_per_pod, argv
):
    record = _record(stage, config)
    manifest = rayjob_manifest(record, {}, settings_for(artifacts, redis_url))
    jsonschema.Draft7Validator(rayjob_schema()).validate(manifest)
    (group,) = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert group["replicas"] == workers
    assert int(limits.get("nvidia.com/gpu", 0)) == gpus_per_pod
    assert group["rayStartParams"]["num-gpus"] == str(gpus_per_pod)
    assert ("nodeSelector" in pod) == bool(gpus_per_pod)  # CPU shapes stay off the GPU pool
    words = shlex.split(record.entrypoint)
    for flag in argv:
        assert flag in words, (flag, words)
    if "--gpu" not in argv:
        assert "--gpu" not in words


def test_single_process_stages_get_a_head_only_cluster(kube, artifacts, redis_url):
    manifest = rayjob_manifest(
        _record("tokenizer", {"preset": "d20"}), {}, settings_for(artifacts, redis_url)
    )
    jsonschema.Draft7Validator(rayjob_schema()).validate(manifest)
    assert "workerGroupSpecs" not in manifest["spec"]["rayClusterSpec"]


def test_pods_are_restricted_and_carry_the_configured_pool(kube, artifacts, redis_url):
    clusters = JobClusters.model_validate({
        "namePrefix": "my-team-llm-platform-prod-chatforge",
        "imagePullSecrets": ["regcred"], "priorityClassName": "training", "shmSizeLimit": "16Gi",
        "gpuPool": {"nodeSelector": {"pool": "h100"}, "tolerations": [{"key": "gpu", "operator": "Exists"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}},
        "head": {"resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}}},
        "submitter": {"resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        "redis": {"url": "redis://cf-redis:6379/0", "passwordSecret": {"name": "cf-redis", "key": "password"}},
    })  # fmt: skip
    record = _record("base", {"preset": "d20"})
    env = {"REDIS_URL": "redis://:s3cret@cf-redis:6379/0", "CHATFORGE_ARTIFACTS": "/artifacts"}
    manifest = rayjob_manifest(record, env, settings_for(artifacts, redis_url), clusters)
    jsonschema.Draft7Validator(rayjob_schema()).validate(manifest)
    assert "s3cret" not in json.dumps(manifest)  # the password stays in its Secret
    name = manifest["metadata"]["name"]
    assert len(name) <= MAX_RAYJOB_NAME and name.endswith(record.id) and name[0].isalpha()
    cluster = manifest["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    submitter = manifest["spec"]["submitterPodTemplate"]
    assert head["containers"][0]["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert submitter["spec"]["containers"][0]["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}}
    assert submitter["metadata"]["labels"]["app.kubernetes.io/component"] == "training-submitter"
    assert worker["nodeSelector"] == {"pool": "h100"} and worker["tolerations"][0]["key"] == "gpu"
    assert worker["affinity"]["nodeAffinity"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in worker["volumes"]
    for pod in (head, worker, submitter["spec"]):
        assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "training"
        assert_restricted(pod)
        for container in pod["containers"]:
            if container["name"] == "ray-job-submitter":
                continue
            env_by_name = {e["name"]: e for e in container["env"]}
            assert env_by_name["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "cf-redis",
                "key": "password",
            }
            assert env_by_name["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@cf-redis:6379/0"
            # the kubelet expands $(VAR) only for variables defined earlier in the list
            assert list(env_by_name).index("REDIS_PASSWORD") < list(env_by_name).index("REDIS_URL")


def assert_restricted(pod: dict) -> None:
    """The restricted Pod Security Standard's checks that a pod spec decides."""
    ctx = pod.get("securityContext", {})
    assert ctx.get("runAsNonRoot") is True and isinstance(ctx.get("runAsUser"), int) and ctx["runAsUser"] > 0
    assert ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for container in pod["containers"]:
        c = container.get("securityContext", {})
        assert c.get("allowPrivilegeEscalation") is False, container["name"]
        assert c.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
        assert not set(c.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}
        assert not c.get("privileged")


def test_a_redis_password_is_never_written_into_the_rayjob(artifacts, redis_url):
    record = _record("base")
    with pytest.raises(BackendError, match="would be written into the RayJob"):
        rayjob_manifest(
            record, {"REDIS_URL": "redis://:s3cret@redis:6379/0"}, settings_for(artifacts, redis_url)
        )


def test_rayjob_names_keep_kuberays_limits():
    long = "my-team-llm-platform-prod-chatforge"
    names = {object_name("job-0123456789ab", prefix) for prefix in (long, long + "-x", "9lives", "chatforge")}
    assert len(names) == 4  # distinct, even for long prefixes that share their start
    for name in names:
        assert len(name) <= MAX_RAYJOB_NAME, name
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name  # DNS-1035: a letter first
        assert name.endswith("job-0123456789ab")
    assert object_name("job-0123456789ab", long) == object_name("job-0123456789ab", long)
    assert object_name("job-0123456789ab") == "chatforge-job-0123456789ab"


def test_gpu_requests_beyond_the_cluster_are_refused(gateway):
    for config, param in (
        ({"gpu": True}, "config.gpu"),  # tiny runs on CPU
        ({"preset": "d12", "workers": 2}, "config.workers"),  # one GPU
    ):
        r = httpx.post(gateway.url + "/v1/jobs", json={"stage": "base", "config": config})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == param and "gateway.jobs.presets" in error["message"], error


def test_submit_follow_and_cancel(gateway, kube):
    r = httpx.post(
        gateway.url + "/v1/jobs",
        json={"stage": "sft", "run": "kr", "config": {"preset": "d12", "num_steps": 5, "gpu": True}},
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and job["backend"] == "kuberay"
    obj = _object(kube, job["id"])  # the emulator validated it against the CRD on create
    assert obj["spec"]["entrypoint"] == job["entrypoint"]
    assert "--num-steps 5" in job["entrypoint"] and "--gpu" in job["entrypoint"]
    # what runs: the request's flags, and one Ray Train worker per GPU of the d12 cluster (one)
    assert job["config"] == {"preset": "d12", "num_steps": 5, "gpu": True, "workers": 1}
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


def test_logs_are_the_submitter_pods_log(gateway, kube):
    """KubeRay makes the submitter pod from the RayJob's template; the gateway finds it by its
    labels and returns its log through the Kubernetes API."""
    pods = serve_pods(kube)
    job_id = httpx.post(gateway.url + "/v1/jobs", json={"stage": "base"}).json()["id"]
    waiting = httpx.get(gateway.url + f"/v1/jobs/{job_id}/logs")
    assert waiting.status_code == 200 and "no submitter pod yet" in waiting.text
    template = _object(kube, job_id)["spec"]["submitterPodTemplate"]
    log = "".join(f"step {i:05d} loss 3.21\n" for i in range(100))
    pods.create_from_template(NS, f"chatforge-{job_id}-x7k2p", template, log)
    pods.create_from_template(NS, "someone-elses-pod", {**template, "metadata": {"labels": {"a": "b"}}}, "no")
    r = httpx.get(gateway.url + f"/v1/jobs/{job_id}/logs")
    assert r.status_code == 200 and r.text == log
    (request,) = [q for q in pods.log_requests if q["name"].startswith(f"chatforge-{job_id}")][-1:]
    assert request["container"] == "ray-job-submitter" and int(request["limitBytes"]) > 0


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
