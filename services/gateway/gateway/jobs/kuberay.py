"""Jobs on Kubernetes: one KubeRay `RayJob` (ray.io/v1) per job, through the kubernetes client.

The RayJob brings up its own Ray cluster (a head and the GPU worker group from settings), runs the
entrypoint, and is torn down when the job ends (`shutdownAfterJobFinishes`, then deleted after
`ttlSecondsAfterFinished`). The gateway reads `status.jobStatus` to follow it and deletes the object
to cancel it. `rayjob_manifest` is pure, so the object is validated against KubeRay's CRD in tests.
"""

from __future__ import annotations

from typing import Any

import yaml

from gateway.jobs.backend import RAY_JOB_STATES, BackendError, BackendStatus, JobGone
from gateway.jobs.spec import JobRecord
from gateway.settings import Settings

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"


def object_name(job_id: str) -> str:
    return f"chatforge-{job_id}"


def rayjob_manifest(record: JobRecord, env: dict[str, str], settings: Settings) -> dict[str, Any]:
    """The RayJob for one job: entrypoint, runtime env, head and GPU worker group, lifetime."""
    labels = {
        "app.kubernetes.io/name": "chatforge",
        "app.kubernetes.io/component": "training",
        "chatforge.io/job-id": record.id,
        "chatforge.io/stage": record.stage,
    }
    gpu = {"nvidia.com/gpu": str(settings.kube_gpus_per_worker)} if settings.kube_gpus_per_worker else {}
    worker_resources = {"cpu": settings.kube_worker_cpus, "memory": settings.kube_worker_memory, **gpu}
    env_list = [{"name": k, "value": v} for k, v in sorted(env.items())]
    # Checkpoints must outlive the job's pods: the artifact store's claim is mounted where
    # CHATFORGE_ARTIFACTS points, in the head (which runs single-process stages) and every worker.
    volumes, mounts = [], []
    if settings.kube_artifacts_claim:
        volumes = [
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": settings.kube_artifacts_claim}}
        ]
        mounts = [{"name": "artifacts", "mountPath": settings.artifacts_root}]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {"name": object_name(record.id), "namespace": settings.kube_namespace, "labels": labels},
        "spec": {
            "entrypoint": record.entrypoint,
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": env}, sort_keys=True),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": settings.kube_ttl_after_finished_s,
            "activeDeadlineSeconds": settings.kube_active_deadline_s,
            "submissionMode": "K8sJobMode",
            "rayClusterSpec": {
                "rayVersion": settings.kube_ray_version,
                "headGroupSpec": {
                    "rayStartParams": {"num-gpus": "0"},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-head",
                                    "image": settings.kube_image,
                                    "env": env_list,
                                    "volumeMounts": mounts,
                                    "resources": {
                                        "requests": {"cpu": "2", "memory": "8Gi"},
                                        "limits": {"cpu": "2", "memory": "8Gi"},
                                    },
                                }
                            ],
                            "volumes": volumes,
                        },
                    },
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu-workers",
                        "replicas": settings.kube_gpu_workers,
                        "minReplicas": settings.kube_gpu_workers,
                        "maxReplicas": settings.kube_gpu_workers,
                        "rayStartParams": {},
                        "template": {
                            "metadata": {"labels": labels},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "ray-worker",
                                        "image": settings.kube_image,
                                        "env": env_list,
                                        "volumeMounts": mounts,
                                        "resources": {
                                            "requests": worker_resources,
                                            "limits": worker_resources,
                                        },
                                    }
                                ],
                                "volumes": volumes,
                                "tolerations": [
                                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                                ],
                            },
                        },
                    }
                ],
            },
        },
    }


class KubeRayBackend:
    name = "kuberay"

    def __init__(self, settings: Settings, api_client: Any = None):
        from kubernetes import client, config

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
        self._ns = settings.kube_namespace

    def submit(self, record: JobRecord, env: dict[str, str]) -> str:
        body = rayjob_manifest(record, env, self.settings)
        try:
            self._api.create_namespaced_custom_object(GROUP, VERSION, self._ns, PLURAL, body)
        except Exception as e:
            raise BackendError(f"Kubernetes refused the RayJob: {_reason(e)}") from None
        return body["metadata"]["name"]

    def status(self, record: JobRecord) -> BackendStatus:
        name = record.backend_ref or object_name(record.id)
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
        name = record.backend_ref or object_name(record.id)
        try:
            self._api.delete_namespaced_custom_object(GROUP, VERSION, self._ns, PLURAL, name)
        except Exception as e:
            if getattr(e, "status", None) != 404:
                raise BackendError(f"cannot delete RayJob {name}: {_reason(e)}") from None

    def logs(self, record: JobRecord) -> str:
        name = record.backend_ref or object_name(record.id)
        return f"logs of RayJob {name} are in its submitter pod: kubectl logs -n {self._ns} job/{name}\n"

    def close(self) -> None:
        self._api_client.close()


def _reason(e: Exception) -> str:
    status, body = getattr(e, "status", None), getattr(e, "body", None)
    return f"HTTP {status}: {body}" if status else str(e)
