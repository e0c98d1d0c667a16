"""Pods for the Kubernetes emulator: the core/v1 endpoints the kuberay backend reads job logs with.

Added to a running `KubeEmulator`'s app: list pods in a namespace by label selector (equality terms,
as the API server reads `a=b,c=d`), and read a container's log with `limitBytes` (the tail is not
what the API server cuts: it returns the first bytes; the backend asks for a bound, not a tail).
A test plays KubeRay by creating the submitter pod from the RayJob's `submitterPodTemplate`.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse

from tests.gateway.kube_emulator import KubeEmulator


class Pods:
    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str, str], str] = {}
        self.log_requests: list[dict[str, Any]] = []

    def create_from_template(self, namespace: str, name: str, template: dict[str, Any], log: str) -> None:
        """A pod as a Job controller makes it from a pod template, with `log` as its container's output."""
        meta = {
            **template.get("metadata", {}),
            "name": name,
            "namespace": namespace,
            "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
        self.pods[(namespace, name)] = pod
        for container in template["spec"]["containers"]:
            self.logs[(namespace, name, container["name"])] = log


def serve_pods(kube: KubeEmulator) -> Pods:
    """The emulator's pods (added once per emulator; later calls return the same store)."""
    existing = getattr(kube, "pods", None)
    if existing is not None:
        return existing
    pods = Pods()
    app = kube.app

    @app.get("/api/v1/namespaces/{namespace}/pods")
    async def list_pods(namespace: str, request: Request) -> JSONResponse:
        terms = [t for t in request.query_params.get("labelSelector", "").split(",") if t]
        wanted = dict(t.split("=", 1) for t in terms)
        items = [
            p
            for (ns, _), p in pods.pods.items()
            if ns == namespace and wanted.items() <= p["metadata"].get("labels", {}).items()
        ]
        return JSONResponse({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})

    @app.get("/api/v1/namespaces/{namespace}/pods/{name}/log")
    async def read_log(namespace: str, name: str, request: Request) -> Any:
        params = dict(request.query_params)
        pods.log_requests.append({"namespace": namespace, "name": name, **params})
        container = params.get("container", "")
        text = pods.logs.get((namespace, name, container))
        if text is None:
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                    "reason": "NotFound", "message": f'pods "{name}" not found'}  # fmt: skip
            return JSONResponse(body, status_code=404)
        limit = int(params.get("limitBytes", 0)) or len(text.encode())
        return PlainTextResponse(text.encode()[:limit].decode(errors="ignore"))

    kube.pods = pods  # type: ignore[attr-defined]
    return pods
