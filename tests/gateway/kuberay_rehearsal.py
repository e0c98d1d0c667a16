"""A rehearsal of the KubeRay operator: a test double of its reconciler over the Kubernetes emulator.

There is no API server or operator here, so the gateway's Kubernetes path is rehearsed against the
emulator (`kube_emulator.py`), and this double does the operator's part on a real local Ray:

- **RayJob** (ray.io/v1): once created, its `spec.entrypoint` is submitted through the Ray Jobs
  REST API of a local Ray head with the runtime env of `spec.runtimeEnvYAML` (plus the environment
  the pod template would give it), and the object's status moves as KubeRay moves it:
  `jobDeploymentStatus` Initializing → Running → Complete or Failed, `jobStatus` PENDING →
  RUNNING → SUCCEEDED / FAILED / STOPPED, with `jobId`, `rayClusterName`, `dashboardURL`,
  `startTime`, `endTime`, `message`. The job's output becomes the log of a submitter pod made from
  `spec.submitterPodTemplate` (`kube_pods.py`), where the gateway reads logs. A deleted RayJob's
  Ray job is stopped.
- **RayService**: the emulator gains its endpoints (create validated against the CRD, get, merge
  patch with a resourceVersion precondition and `metadata.generation` bumped on a spec change,
  status). When `metadata.generation` passes `status.observedGeneration`, the double applies
  `spec.serveConfigV2` to the local Ray's Serve through its REST API, as KubeRay does for a change
  of the serve config alone (no new cluster), then reports each application's and deployment's
  status in `status.activeServiceStatus.applicationStatuses` with the generation it observed.

One Ray head plays both the job clusters and the RayService's cluster (KubeRay would give each its
own). Every status the double writes is validated against the CRD's schema.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from fastapi import Request
from fastapi.responses import JSONResponse
from gateway.jobs.ray_jobs import ray_auth_headers

from tests.gateway.kube_emulator import CRD_PATH, KubeEmulator
from tests.gateway.kube_pods import serve_pods

RAYSERVICE_CRD = CRD_PATH.with_name("ray.io_rayservices.yaml")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@functools.cache
def crd_schema(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _status(code: int, reason: str, message: str) -> JSONResponse:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": reason, "code": code}  # fmt: skip
    return JSONResponse(body, status_code=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what the kubernetes client sends for a dict body)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class RayServices:
    """The emulator's RayService objects, and the lock the endpoints and the operator share."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.validator = jsonschema.Draft7Validator(crd_schema(RAYSERVICE_CRD))


def serve_rayservices(kube: KubeEmulator) -> RayServices:
    """RayService endpoints on the emulator (added once per emulator; later calls return the same
    store): create validated against the CRD, get, merge patch with a resourceVersion
    precondition and `metadata.generation` bumped on a spec change."""
    existing = getattr(kube, "rayservices", None)
    if existing is not None:
        return existing
    store = RayServices()
    app = kube.app
    base = "/apis/ray.io/v1/namespaces/{namespace}/rayservices"
    services, validator, lock = store.objects, store.validator, store.lock

    @app.post(base)
    async def create(namespace: str, request: Request) -> JSONResponse:
        body = await request.json()
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path)
            return _status(422, "Invalid", f"RayService is invalid: {where}: {errors[0].message}")
        meta = body.setdefault("metadata", {})
        name = meta.get("name", "")
        with lock:
            if (namespace, name) in services:
                return _status(409, "AlreadyExists", f'rayservices.ray.io "{name}" already exists')
            meta.update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1", generation=1,
                        creationTimestamp=_now())  # fmt: skip
            services[(namespace, name)] = body
        return JSONResponse(body, status_code=201)

    @app.get(base + "/{name}")
    async def get(namespace: str, name: str) -> JSONResponse:
        obj = services.get((namespace, name))
        if obj is None:
            return _status(404, "NotFound", f'rayservices.ray.io "{name}" not found')
        with lock:
            return JSONResponse(copy.deepcopy(obj))

    @app.patch(base + "/{name}")
    async def patch(namespace: str, name: str, request: Request) -> JSONResponse:
        if "merge-patch" not in request.headers.get("content-type", ""):
            return _status(415, "UnsupportedMediaType", "the emulator takes merge patches only")
        body = await request.json()
        with lock:
            obj = services.get((namespace, name))
            if obj is None:
                return _status(404, "NotFound", f'rayservices.ray.io "{name}" not found')
            asked = (body.get("metadata") or {}).get("resourceVersion")
            if asked is not None and asked != obj["metadata"]["resourceVersion"]:
                return _status(409, "Conflict", "the object has been modified; apply your changes "
                               "to the latest version and try again")  # fmt: skip
            body.get("metadata", {}).pop("resourceVersion", None)
            candidate = merge_patch(obj, {k: v for k, v in body.items() if k != "status"})
            errors = list(validator.iter_errors(candidate))
            if errors:
                return _status(422, "Invalid", f"RayService is invalid: {errors[0].message}")
            meta = candidate["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            if candidate.get("spec") != obj.get("spec"):
                meta["generation"] = int(meta.get("generation", 1)) + 1
            services[(namespace, name)] = candidate
            return JSONResponse(copy.deepcopy(candidate))

    kube.rayservices = store  # type: ignore[attr-defined]
    return store


class KubeRayRehearsal:
    """The reconciler double; `start()` adds the RayService endpoints and runs the loop."""

    def __init__(
        self,
        kube: KubeEmulator,
        dashboard_url: str,
        *,
        serve_port: int,
        pod_env: dict[str, str],
        poll_s: float = 0.25,
    ):
        self.kube = kube
        self.dashboard = dashboard_url.rstrip("/")
        self.serve_port = serve_port
        self.pod_env = pod_env  # what the pods' env (the chart's, the image's) gives every process
        self.poll_s = poll_s
        self.submitted: dict[tuple[str, str], str] = {}  # RayJob → Ray job submission id
        self.applied: list[dict[str, Any]] = []  # each serve config written to Serve, in order
        # each RayJob's (jobDeploymentStatus, jobStatus) as the double moved them, in order
        self.history: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=60, trust_env=False, headers=ray_auth_headers())
        self._jobs_validator = jsonschema.Draft7Validator(crd_schema(CRD_PATH))
        self._thread = threading.Thread(target=self._loop, name="kuberay-rehearsal", daemon=True)
        self.errors: list[str] = []

    # --- the operator's part ------------------------------------------------------------------------
    def start(self) -> KubeRayRehearsal:
        self.serve_api()
        self._thread.start()
        return self

    def serve_api(self) -> KubeRayRehearsal:
        """Only the API server's part (RayService endpoints, pods), for a test that plays the
        operator itself."""
        serve_pods(self.kube)
        store = serve_rayservices(self.kube)
        self.services, self._lock, self._services_validator = store.objects, store.lock, store.validator
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._reconcile_jobs()
                self._reconcile_services()
            except Exception as e:  # kept for the test to report; the loop goes on like an operator
                self.errors.append(repr(e))
            self._stop.wait(self.poll_s)

    def _set_job_status(self, key: tuple[str, str], **fields: Any) -> None:
        obj = self.kube.objects.get(key)
        if obj is None:
            return
        candidate = {**obj, "status": {**obj.get("status", {}), **fields}}
        jsonschema.validate(candidate, crd_schema(CRD_PATH))  # what KubeRay writes fits its CRD
        obj["status"] = candidate["status"]
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        moved = (obj["status"].get("jobDeploymentStatus", ""), obj["status"].get("jobStatus", ""))
        seen = self.history.setdefault(key, [])
        if not seen or seen[-1] != moved:
            seen.append(moved)

    def _reconcile_jobs(self) -> None:
        for key, obj in list(self.kube.objects.items()):
            if key not in self.submitted:
                self._submit(key, obj)
            else:
                self._follow(key, obj)
        for key in [k for k in self.submitted if k not in self.kube.objects]:
            job_id = self.submitted.pop(key)  # the RayJob was deleted: its cluster goes, and the job
            self._http.post(f"{self.dashboard}/api/jobs/{job_id}/stop")

    def _submit(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        namespace, name = key
        spec = obj["spec"]
        cluster = f"{name}-raycluster"
        self._set_job_status(key, jobDeploymentStatus="Initializing", rayClusterName=cluster,
                             startTime=_now(), observedGeneration=1)  # fmt: skip
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
        runtime_env["env_vars"] = {**self.pod_env, **(runtime_env.get("env_vars") or {})}
        job_id = f"{name}-{uuid.uuid4().hex[:6]}"
        r = self._http.post(
            f"{self.dashboard}/api/jobs/",
            json={"entrypoint": spec["entrypoint"], "submission_id": job_id, "runtime_env": runtime_env},
        )
        self.submitted[key] = job_id
        if r.status_code >= 400:
            self._set_job_status(key, jobDeploymentStatus="Failed", reason="SubmissionFailed",
                                 message=f"submitting the job failed: {r.text[:300]}", endTime=_now())  # fmt: skip
            return
        self._set_job_status(key, jobDeploymentStatus="Running", jobStatus="PENDING", jobId=job_id,
                             dashboardURL=self.dashboard.removeprefix("http://"))  # fmt: skip
        template = spec.get("submitterPodTemplate")
        if template:  # K8sJobMode: the submitter pod follows the job's output
            serve_pods(self.kube).create_from_template(namespace, f"{name}-submitter", template, "")

    def _follow(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        status = obj.get("status", {})
        if status.get("jobDeploymentStatus") in ("Complete", "Failed"):
            return
        job_id = self.submitted[key]
        info = self._http.get(f"{self.dashboard}/api/jobs/{job_id}").json()
        logs = self._http.get(f"{self.dashboard}/api/jobs/{job_id}/logs").json().get("logs", "")
        pods = serve_pods(self.kube)
        for ns, pod, container in list(pods.logs):
            if ns == key[0] and pod == f"{key[1]}-submitter":
                pods.logs[(ns, pod, container)] = logs
        state = info.get("status", "PENDING")
        if state == status.get("jobStatus") and state not in TERMINAL:
            return
        fields: dict[str, Any] = {"jobStatus": state, "message": info.get("message") or ""}
        if state in TERMINAL:
            fields["endTime"] = _now()
            fields["jobDeploymentStatus"] = "Complete" if state == "SUCCEEDED" else "Failed"
            if state != "SUCCEEDED":
                fields["reason"] = "AppFailed"
        self._set_job_status(key, **fields)

    # --- RayService -------------------------------------------------------------------------------
    def _serve_apps(self) -> dict[str, Any]:
        details = self._http.get(f"{self.dashboard}/api/serve/applications/").json()
        apps: dict[str, Any] = details.get("applications") or {}
        return apps

    def _reconcile_services(self) -> None:
        for key, obj in list(self.services.items()):
            generation = int(obj["metadata"].get("generation", 1))
            observed = int((obj.get("status") or {}).get("observedGeneration") or 0)
            if observed < generation:
                self._apply_serve_config(obj)
            self._report(key, generation if observed < generation else observed)

    def _apply_serve_config(self, obj: dict[str, Any]) -> None:
        config = yaml.safe_load(obj["spec"]["serveConfigV2"])
        for app in config.get("applications", []):
            env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
            app["runtime_env"]["env_vars"] = {**self.pod_env, **env}
        config["http_options"] = {"host": "127.0.0.1", "port": self.serve_port}
        before = {n: a.get("last_deployed_time_s") for n, a in self._serve_apps().items()}
        r = self._http.put(f"{self.dashboard}/api/serve/applications/", json=config)
        r.raise_for_status()
        self.applied.append(config)
        # KubeRay reports a generation as observed once Serve has taken its config.
        deadline = time.monotonic() + 60
        names = [a["name"] for a in config.get("applications", [])]
        while time.monotonic() < deadline:
            now = self._serve_apps()
            if all(n in now and now[n].get("last_deployed_time_s") != before.get(n) for n in names):
                return
            time.sleep(0.1)

    def _report(self, key: tuple[str, str], observed: int) -> None:
        apps = self._serve_apps()
        statuses = {
            name: {
                "status": app.get("status", ""),
                "message": app.get("message", ""),
                "serveDeploymentStatuses": {
                    d: {"status": info.get("status", ""), "message": info.get("message", "")}
                    for d, info in (app.get("deployments") or {}).items()
                },
            }
            for name, app in apps.items()
        }
        running = bool(statuses) and all(s["status"] == "RUNNING" for s in statuses.values())
        with self._lock:
            obj = self.services.get(key)
            if obj is None:
                return
            status = {
                **(obj.get("status") or {}),
                "observedGeneration": observed,
                "serviceStatus": "Running" if running else "",
                "numServeEndpoints": 1 if running else 0,
                "activeServiceStatus": {
                    "rayClusterName": f"{key[1]}-raycluster",
                    "applicationStatuses": statuses,
                },
            }
            candidate = {**obj, "status": status}
            self._services_validator.validate(candidate)
            obj["status"] = status
