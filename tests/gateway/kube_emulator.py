"""A small Kubernetes API emulator: the namespaced custom-objects endpoints the kuberay backend uses.

A real HTTP server (FastAPI on 127.0.0.1) that the real `kubernetes` client talks to. It validates
every created RayJob against KubeRay's CRD schema (spec.versions[v1].schema.openAPIV3Schema) and
answers like the API server: 201 on create, 409 on a duplicate name, 404 for missing objects,
422 with a Status body when validation fails. `PATCH .../status` lets a test play the operator.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

CRD_PATH = (
    Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "kuberay" / "ray.io_rayjobs.yaml"
)


@functools.cache
def rayjob_schema(path: Path = CRD_PATH) -> dict[str, Any]:
    """The CRD's v1 schema (read once: the file is large and YAML parsing is slow)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def _status(code: int, reason: str, message: str) -> JSONResponse:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return JSONResponse(body, status_code=code)


def make_app(schema: dict[str, Any]) -> tuple[FastAPI, dict[tuple[str, str], dict[str, Any]]]:
    app = FastAPI()
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    validator = jsonschema.Draft7Validator(schema)
    base = "/apis/ray.io/v1/namespaces/{namespace}/rayjobs"

    @app.post(base)
    async def create(namespace: str, request: Request) -> JSONResponse:
        body = await request.json()
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path)
            return _status(422, "Invalid", f"RayJob is invalid: {where}: {errors[0].message}")
        if body.get("kind") != "RayJob" or body.get("apiVersion") != "ray.io/v1":
            return _status(400, "BadRequest", "kind/apiVersion must be RayJob ray.io/v1")
        meta = body.setdefault("metadata", {})
        name = meta.get("name", "")
        if (namespace, name) in objects:
            return _status(409, "AlreadyExists", f'rayjobs.ray.io "{name}" already exists')
        meta.update(
            namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1",
            creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )  # fmt: skip
        objects[(namespace, name)] = body
        return JSONResponse(body, status_code=201)

    @app.get(base)
    async def list_(namespace: str) -> dict[str, Any]:
        items = [o for (ns, _), o in objects.items() if ns == namespace]
        return {"apiVersion": "ray.io/v1", "kind": "RayJobList", "items": items, "metadata": {}}

    @app.get(base + "/{name}")
    async def get(namespace: str, name: str) -> JSONResponse:
        obj = objects.get((namespace, name))
        if obj is None:
            return _status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
        return JSONResponse(obj)

    @app.delete(base + "/{name}")
    async def delete(namespace: str, name: str) -> JSONResponse:
        obj = objects.pop((namespace, name), None)
        if obj is None:
            return _status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
        return JSONResponse(
            {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}
        )

    @app.patch(base + "/{name}/status")
    async def patch_status(namespace: str, name: str, request: Request) -> JSONResponse:
        obj = objects.get((namespace, name))
        if obj is None:
            return _status(404, "NotFound", f'rayjobs.ray.io "{name}" not found')
        patch = await request.json()
        status = {**obj.get("status", {}), **patch.get("status", {})}
        candidate = {**obj, "status": status}
        errors = list(validator.iter_errors(candidate))
        if errors:
            return _status(422, "Invalid", f"status is invalid: {errors[0].message}")
        obj["status"] = status
        obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        return JSONResponse(obj)

    return app, objects


class KubeEmulator:
    def __init__(self, schema: dict[str, Any]):
        self.app, self.objects = make_app(schema)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> KubeEmulator:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the Kubernetes emulator did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
