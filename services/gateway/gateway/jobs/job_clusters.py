"""The Ray clusters of training jobs on Kubernetes: one shape per preset, and what every pod gets.

The Helm chart renders this from `gateway.jobs` in its values into a ConfigMap the gateway mounts
(`CHATFORGE_GATEWAY_KUBE_CLUSTERS_FILE`); without a file the defaults below hold. A job's cluster
is chosen by its preset (`tiny` on CPU, `d12` on one GPU, `d20` on one node of 8, `d26` on two such
nodes); stages that name no preset (rl, eval, report) take `defaultPreset`'s. The job is then run
with as many Ray Train workers as the cluster has GPUs (`KubeRayBackend.fit`), one GPU each.

Pod-level fragments (resources, node selector, tolerations, affinity, security contexts) are
Kubernetes objects passed through as given; tests validate the RayJobs built from them against
KubeRay's CRD.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

K8sObject = dict[str, Any]

# The restricted Pod Security Standard: what every Ray pod of a job runs with unless overridden.
RESTRICTED_POD: K8sObject = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "fsGroup": 1000,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: K8sObject = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
GPU_POOL_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_POOL_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Placement(_Model):
    """Where pods go: a node selector, tolerations and affinity, as Kubernetes writes them."""

    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[K8sObject] = Field(default_factory=list)
    affinity: K8sObject = Field(default_factory=dict)


class WorkerShape(_Model):
    """One preset's worker group: `workers` pods with `gpus_per_worker` GPUs each (0: CPU only).
    Placement left unset (None) takes the GPU pool's for GPU shapes and none for CPU shapes."""

    workers: int = Field(ge=1, le=1024)
    gpus_per_worker: int = Field(0, ge=0, le=64, alias="gpusPerWorker")
    resources: K8sObject = Field(default_factory=dict)
    node_selector: dict[str, str] | None = Field(None, alias="nodeSelector")
    tolerations: list[K8sObject] | None = None
    affinity: K8sObject | None = None

    @property
    def total_gpus(self) -> int:
        return self.workers * self.gpus_per_worker


class HeadShape(Placement):
    """The Ray head: it runs the job's driver (and single-process stages), never a GPU worker."""

    resources: K8sObject = Field(
        default_factory=lambda: {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    )


class SubmitterShape(Placement):
    """The pod KubeRay starts to submit the job to the head's dashboard and follow its logs."""

    resources: K8sObject = Field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        }
    )


class SecretRef(_Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class RedisAccess(_Model):
    """How job pods reach Redis: the URL without its password, and the Secret holding the password.
    Job pods read the password from the Secret (`valueFrom.secretKeyRef`), so it is never written
    into the RayJob."""

    url: str = Field(pattern=r"^(rediss?|unix)://[^@\s]+$")
    password_secret: SecretRef | None = Field(None, alias="passwordSecret")


def _default_presets() -> dict[str, WorkerShape]:
    return {
        "tiny": WorkerShape(
            workers=1, resources={"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
        ),
        "d12": WorkerShape(
            workers=1,
            gpus_per_worker=1,
            resources={"requests": {"cpu": "8", "memory": "64Gi"}, "limits": {"memory": "64Gi"}},
        ),  # fmt: skip
        "d20": WorkerShape(
            workers=1,
            gpus_per_worker=8,
            resources={"requests": {"cpu": "64", "memory": "512Gi"}, "limits": {"memory": "512Gi"}},
        ),  # fmt: skip
        "d26": WorkerShape(
            workers=2,
            gpus_per_worker=8,
            resources={"requests": {"cpu": "64", "memory": "512Gi"}, "limits": {"memory": "512Gi"}},
        ),  # fmt: skip
    }


class JobClusters(_Model):
    """Everything the kuberay backend puts into the RayJobs it creates, besides the job itself."""

    # RayJob names are <namePrefix>-<job id>, cut to KubeRay's 47 characters (kuberay.object_name).
    name_prefix: str = Field("chatforge", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63,
                             alias="namePrefix")  # fmt: skip
    # Labels of every job pod: the chart's NetworkPolicies and PodMonitors select training pods by them.
    labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "chatforge",
            "app.kubernetes.io/component": "training",
        }
    )
    # Labels of the submitter pod instead (the policies let it, and only it, reach the dashboard).
    submitter_labels: dict[str, str] = Field(
        default_factory=lambda: {
            "app.kubernetes.io/name": "chatforge",
            "app.kubernetes.io/component": "training-submitter",
        },
        alias="submitterLabels",
    )
    presets: dict[str, WorkerShape] = Field(default_factory=_default_presets)
    default_preset: str = Field("d12", alias="defaultPreset")
    gpu_pool: Placement = Field(
        default_factory=lambda: Placement(node_selector=GPU_POOL_NODE_SELECTOR, tolerations=GPU_POOL_TOLERATIONS),
        alias="gpuPool",
    )  # fmt: skip
    head: HeadShape = Field(default_factory=HeadShape)
    submitter: SubmitterShape = Field(default_factory=SubmitterShape)
    priority_class_name: str = Field("", alias="priorityClassName")
    image_pull_secrets: list[str] = Field(default_factory=list, alias="imagePullSecrets")
    # /dev/shm of every Ray pod: a memory-backed emptyDir (NCCL and data loaders outgrow the
    # runtime's 64 MiB); its size counts against the pod's memory limit.
    shm_size_limit: str = Field("", alias="shmSizeLimit")
    pod_security_context: K8sObject = Field(
        default_factory=lambda: dict(RESTRICTED_POD), alias="podSecurityContext"
    )
    container_security_context: K8sObject = Field(
        default_factory=lambda: dict(RESTRICTED_CONTAINER), alias="containerSecurityContext"
    )
    redis: RedisAccess | None = None

    @model_validator(mode="after")
    def _check(self) -> JobClusters:
        if self.default_preset not in self.presets:
            raise ValueError(
                f"defaultPreset {self.default_preset!r} is not one of presets ({', '.join(self.presets)})"
            )
        return self

    def shape(self, preset: str | None) -> tuple[str, WorkerShape]:
        """The preset's worker shape (the default preset's when the job names none or an unknown one)."""
        name = preset if preset in self.presets else self.default_preset
        return name, self.presets[name]

    def placement(self, shape: WorkerShape) -> Placement:
        base = self.gpu_pool if shape.gpus_per_worker else Placement()
        return Placement(
            node_selector=base.node_selector if shape.node_selector is None else shape.node_selector,
            tolerations=base.tolerations if shape.tolerations is None else shape.tolerations,
            affinity=base.affinity if shape.affinity is None else shape.affinity,
        )


def load_job_clusters(path: str) -> JobClusters:
    """The clusters file (YAML or JSON) at `path`, or the defaults when `path` is empty."""
    if not path:
        return JobClusters()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read the job clusters file {path}: {e}") from None
    try:
        return JobClusters.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"job clusters file {path}: {problems}") from None
