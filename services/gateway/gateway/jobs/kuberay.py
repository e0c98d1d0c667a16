"""Jobs on Kubernetes: one KubeRay `RayJob` (ray.io/v1) per job, through the kubernetes client.

The RayJob brings up its own Ray cluster (a head and the worker group of the job's preset, from
`gateway/jobs/job_clusters.py`), runs the entrypoint, and is torn down when the job ends
(`shutdownAfterJobFinishes`, then deleted after `ttlSecondsAfterFinished`). The gateway reads
`status.jobStatus` to follow it, deletes the object to cancel it, and reads the submitter pod's log
for the job's logs. `rayjob_manifest` is pure, so the object is validated against KubeRay's CRD in
tests.

Secrets never enter the RayJob: the Redis password reaches the pods through `secretKeyRef` and
`REDIS_URL` is composed from it by the kubelet (`$(REDIS_PASSWORD)`); a password in the gateway's
own `REDIS_URL` without a Secret to take it from is refused rather than written out.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import yaml

from chatforge.contracts.jobs import JobSpec
from gateway.jobs.backend import RAY_JOB_STATES, BackendError, BackendStatus, JobGone, JobRejected
from gateway.jobs.job_clusters import JobClusters, WorkerShape, load_job_clusters
from gateway.jobs.spec import JobRecord
from gateway.settings import Settings

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
# KubeRay refuses RayJob names longer than this (the RayCluster it makes appends 6 characters and a
# Service appends "-head-svc"), and names that are not DNS-1035 labels (a letter first).
MAX_RAYJOB_NAME = 47
LOG_LIMIT_BYTES = 1024 * 1024  # the tail of the submitter's log one request returns
SUBMITTER_CONTAINER = "ray-job-submitter"
# The variable the kubelet fills from the Secret; REDIS_URL refers to it as $(REDIS_PASSWORD).
REDIS_PASSWORD_ENV = "REDIS_PASSWORD"


def object_name(job_id: str, prefix: str = "chatforge") -> str:
    """`<prefix>-<job id>` as a valid RayJob name: at most 47 characters, starting with a letter.
    The job id (unique) is kept whole; a long prefix is cut and marked with a hash of itself, so
    two long prefixes that share their start still differ."""
    name = f"{prefix}-{job_id}"
    if len(name) > MAX_RAYJOB_NAME:
        digest = hashlib.sha256(prefix.encode()).hexdigest()[:6]
        room = MAX_RAYJOB_NAME - len(job_id) - len(digest) - 2
        name = f"{prefix[:room].rstrip('-')}-{digest}-{job_id}"
    if not name[0].isalpha():
        name = ("j" + name)[:MAX_RAYJOB_NAME]
    return name


def fit_spec(spec: JobSpec, clusters: JobClusters) -> JobSpec:
    """The spec with the Ray Train workers and GPU use its cluster provides, where the request left
    them out: one worker per GPU of the preset's worker group (or per worker pod on CPU). A request
    asking for more GPUs than the cluster has is refused (`JobRejected`, naming the flag)."""
    config: Any = spec.config  # the stage's flags model; which flags it has is checked below
    fields = type(config).model_fields
    if "workers" not in fields:
        return spec  # tokenizer, report: one process, on the head
    preset, shape = clusters.shape(getattr(config, "preset", None))
    given = {k for k in config.model_fields_set if getattr(config, k) is not None}  # null: not given
    slots = shape.total_gpus or shape.workers
    changes: dict[str, Any] = {}
    if "gpu" in fields:
        if "gpu" not in given:
            changes["gpu"] = bool(shape.gpus_per_worker)
        elif config.gpu and not shape.gpus_per_worker:
            raise JobRejected(
                f"config.gpu: the {preset} job cluster has no GPUs (gateway.jobs.presets.{preset}.gpusPerWorker is 0)",
                param="config.gpu",
            )
    if "workers" not in given:
        changes["workers"] = slots
    elif shape.gpus_per_worker and config.workers > slots:
        raise JobRejected(
            f"config.workers: {config.workers} workers need a GPU each; the {preset} job cluster has "
            f"{slots} ({shape.workers} x {shape.gpus_per_worker}, gateway.jobs.presets.{preset})",
            param="config.workers",
        )
    if not changes:
        return spec
    body = {"stage": spec.stage, "run": spec.run,
            "config": {**config.model_dump(mode="json", exclude_unset=True), **changes}}  # fmt: skip
    try:
        return JobSpec.model_validate(body)
    except ValueError as e:  # the preset's recipe does not split over this many workers
        raise JobRejected(
            f"config.workers: the {preset} job cluster runs {slots} workers, which this job's config "
            f"does not allow ({e}); set config.workers or change gateway.jobs.presets.{preset}",
            param="config.workers",
        ) from None


def rayjob_manifest(
    record: JobRecord, env: dict[str, str], settings: Settings, clusters: JobClusters | None = None
) -> dict[str, Any]:
    """The RayJob for one job: entrypoint, environment, head, the preset's worker group, submitter."""
    clusters = clusters or JobClusters()
    labels = {**clusters.labels, "chatforge.io/job-id": record.id, "chatforge.io/stage": record.stage}
    env_list = _pod_env(env, clusters)
    # Checkpoints must outlive the job's pods: the artifact store's claim is mounted where
    # CHATFORGE_ARTIFACTS points, in the head (which runs single-process stages) and every worker.
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": _shm(clusters)}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if settings.kube_artifacts_claim:
        volumes.append(
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": settings.kube_artifacts_claim}}
        )
        mounts.append({"name": "artifacts", "mountPath": settings.artifacts_root})
    _, shape = clusters.shape(_job_preset(record))

    def pod(name: str, resources: dict[str, Any], placement: Any, extra: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "securityContext": clusters.pod_security_context,
            "containers": [
                {
                    "name": name,
                    "image": settings.kube_image,
                    "env": env_list,
                    "volumeMounts": mounts,
                    "resources": resources,
                    "securityContext": clusters.container_security_context,
                }
            ],
            "volumes": volumes,
            **_placement(placement),
            **extra,
        }
        return {"metadata": {"labels": labels}, "spec": spec}

    common = _common_pod_fields(clusters)
    cluster: dict[str, Any] = {
        "rayVersion": settings.kube_ray_version,
        "headGroupSpec": {
            "rayStartParams": {"num-gpus": "0"},
            "template": pod("ray-head", clusters.head.resources, clusters.head, common),
        },
    }
    if "workers" in _stage_fields(record):
        cluster["workerGroupSpecs"] = [_worker_group(shape, clusters, pod, common)]
    submitter_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": clusters.pod_security_context,
        "automountServiceAccountToken": False,
        "containers": [
            {
                "name": SUBMITTER_CONTAINER,
                "image": settings.kube_image,
                "resources": clusters.submitter.resources,
                "securityContext": clusters.container_security_context,
            }
        ],
        **_placement(clusters.submitter),
        **common,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {
            "name": object_name(record.id, clusters.name_prefix),
            "namespace": settings.kube_namespace,
            "labels": labels,
        },
        "spec": {
            "entrypoint": record.entrypoint,
            # Only what is not secret: REDIS_URL comes from the pods' environment (see the module doc).
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": _public_env(env)}, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": settings.kube_ttl_after_finished_s,
            "activeDeadlineSeconds": settings.kube_active_deadline_s,
            "submissionMode": "K8sJobMode",
            "submitterPodTemplate": {
                "metadata": {"labels": {**clusters.submitter_labels, "chatforge.io/job-id": record.id}},
                "spec": submitter_spec,
            },
            "rayClusterSpec": cluster,
        },
    }


class KubeRayBackend:
    name = "kuberay"

    def __init__(self, settings: Settings, api_client: Any = None, clusters: JobClusters | None = None):
        from kubernetes import client, config

        try:
            self.clusters = clusters or load_job_clusters(settings.kube_clusters_file)
        except ValueError as e:
            raise BackendError(f"{e} (CHATFORGE_GATEWAY_KUBE_CLUSTERS_FILE)") from None
        if api_client is None:
            try:
                if settings.kube_config:
                    config.load_kube_config(settings.kube_config)
                else:
                    config.load_incluster_config()
            except Exception as e:
                raise BackendError(
                    f"no Kubernetes configuration ({e}): set CHATFORGE_GATEWAY_KUBE_CONFIG or run in a pod"
                ) from None
            api_client = client.ApiClient()
        self.settings = settings
        self._api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._ns = settings.kube_namespace

    def fit(self, spec: JobSpec) -> JobSpec:
        return fit_spec(spec, self.clusters)

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        body = rayjob_manifest(record, env, self.settings, self.clusters)
        try:
            self._api.create_namespaced_custom_object(GROUP, VERSION, self._ns, PLURAL, body)
        except Exception as e:
            raise BackendError(f"Kubernetes refused the RayJob: {_reason(e)}") from None
        return str(body["metadata"]["name"])

    def status(self, record: JobRecord) -> BackendStatus:
        name = self._name(record)
        try:
            obj: Any = self._api.get_namespaced_custom_object(GROUP, VERSION, self._ns, PLURAL, name)
        except Exception as e:
            if getattr(e, "status", None) == 404:
                raise JobGone(f"RayJob {name} no longer exists in namespace {self._ns}") from None
            raise BackendError(f"cannot read RayJob {name}: {_reason(e)}") from None
        status = obj.get("status") or {}
        if status.get("jobDeploymentStatus") == "Failed" and status.get("jobStatus") != "SUCCEEDED":
            return BackendStatus("failed", status.get("message") or status.get("reason") or "RayJob failed")
        return BackendStatus(
            RAY_JOB_STATES.get(status.get("jobStatus", ""), "queued"), status.get("message", "")
        )

    def stop(self, record: JobRecord) -> None:
        name = self._name(record)
        try:
            self._api.delete_namespaced_custom_object(GROUP, VERSION, self._ns, PLURAL, name)
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise BackendError(f"cannot delete RayJob {name}: {_reason(e)}") from None

    def logs(self, record: JobRecord) -> str:
        """The job's log as its submitter pod prints it (`ray job submit` follows the driver's
        output): the newest pod of the job's submitter, its last LOG_LIMIT_BYTES."""
        selector = f"chatforge.io/job-id={record.id}," + ",".join(
            f"{k}={v}" for k, v in sorted(self.clusters.submitter_labels.items())
        )
        try:
            pods: list[Any] = self._core.list_namespaced_pod(self._ns, label_selector=selector).items
        except Exception as e:
            raise BackendError(f"cannot list the submitter pods of job {record.id}: {_reason(e)}") from None
        if not pods:
            return (
                f"job {record.id} has no submitter pod yet (RayJob {self._name(record)} is starting its "
                "cluster), or it was deleted with the RayJob\n"
            )
        newest = max(pods, key=lambda p: str(p.metadata.creation_timestamp or ""))
        pod_name = str(newest.metadata.name)
        try:
            text = self._core.read_namespaced_pod_log(
                pod_name, self._ns, container=SUBMITTER_CONTAINER, limit_bytes=LOG_LIMIT_BYTES
            )
        except Exception as e:
            if getattr(e, "status", None) == 400:  # the container has not started: no log yet
                return f"the submitter pod {pod_name} of job {record.id} has not started yet\n"
            raise BackendError(f"cannot read the log of pod {pod_name}: {_reason(e)}") from None
        return str(text or "")

    def _name(self, record: JobRecord) -> str:
        return record.backend_ref or object_name(record.id, self.clusters.name_prefix)

    def close(self) -> None:
        self._api_client.close()


# --- helpers -------------------------------------------------------------------------------------


def _stage_fields(record: JobRecord) -> dict[str, Any]:
    from chatforge.contracts.jobs import FLAGS

    flags = FLAGS.get(record.stage)
    return dict(flags.model_fields) if flags else {}


def _job_preset(record: JobRecord) -> str | None:
    """The preset the job's stage runs with (its flags' default when the request named none)."""
    from chatforge.contracts.jobs import FLAGS

    flags = FLAGS.get(record.stage)
    if flags is None or "preset" not in flags.model_fields:
        return None
    return str(record.config.get("preset") or flags.model_fields["preset"].default)


def _public_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("REDIS_URL", REDIS_PASSWORD_ENV)}


def _pod_env(env: dict[str, str], clusters: JobClusters) -> list[dict[str, Any]]:
    """The pods' environment: the job's variables, and REDIS_URL with its password from a Secret."""
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(_public_env(env).items())]
    redis = clusters.redis
    if redis is not None:
        if redis.password_secret is not None:
            ref = {"name": redis.password_secret.name, "key": redis.password_secret.key}
            out.append({"name": REDIS_PASSWORD_ENV, "valueFrom": {"secretKeyRef": ref}})
            url = _with_password(redis.url, f"$({REDIS_PASSWORD_ENV})")
        else:
            url = redis.url
        out.append({"name": "REDIS_URL", "value": url})
    elif "REDIS_URL" in env:
        if urlsplit(env["REDIS_URL"]).password:
            raise BackendError(
                "the gateway's REDIS_URL carries a password, which would be written into the RayJob: "
                "give job pods a Secret to read it from (redis.passwordSecret in the job clusters file; "
                "the Helm chart does this)"
            )
        out.append({"name": "REDIS_URL", "value": env["REDIS_URL"]})
    return out


def _with_password(url: str, password: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}:{password}@{rest}"


def _shm(clusters: JobClusters) -> dict[str, Any]:
    shm: dict[str, Any] = {"medium": "Memory"}
    if clusters.shm_size_limit:
        shm["sizeLimit"] = clusters.shm_size_limit
    return shm


def _placement(placement: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if placement.node_selector:
        out["nodeSelector"] = placement.node_selector
    if placement.tolerations:
        out["tolerations"] = placement.tolerations
    if placement.affinity:
        out["affinity"] = placement.affinity
    return out


def _common_pod_fields(clusters: JobClusters) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if clusters.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in clusters.image_pull_secrets]
    if clusters.priority_class_name:
        out["priorityClassName"] = clusters.priority_class_name
    return out


def _worker_group(
    shape: WorkerShape, clusters: JobClusters, pod: Any, common: dict[str, Any]
) -> dict[str, Any]:
    resources = {k: dict(v) for k, v in shape.resources.items()}
    if shape.gpus_per_worker:
        gpus = str(shape.gpus_per_worker)
        resources.setdefault("limits", {})["nvidia.com/gpu"] = gpus
        resources.setdefault("requests", {})["nvidia.com/gpu"] = gpus
    return {
        "groupName": "gpu-workers" if shape.gpus_per_worker else "cpu-workers",
        "replicas": shape.workers,
        "minReplicas": shape.workers,
        "maxReplicas": shape.workers,
        "rayStartParams": {"num-gpus": str(shape.gpus_per_worker)},
        "template": pod("ray-worker", resources, clusters.placement(shape), common),
    }


def _reason(e: Exception) -> str:
    status, body = getattr(e, "status", None), getattr(e, "body", None)
    return f"HTTP {status}: {body}" if status else str(e)
