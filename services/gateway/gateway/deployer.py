"""Switching the checkpoint every inference replica serves, with progress and a rollback.

The engine loads other weights in place when its Serve deployment's `user_config` changes
(`inference_svc.serve.InferenceServer.reconfigure`): Serve calls `reconfigure` on every replica,
and replicas started later get the same config. So a switch is a change of that config, written
where the cluster's owner keeps it:

- `ServeApiSwitch`: Serve's REST API on the Ray dashboard (`PUT /api/serve/applications/`,
  port 8265), for a Ray cluster the gateway may configure itself (docker compose, one machine).
  The PUT carries every application's config, so the others are kept as they are.
- `RayServiceSwitch`: the RayService the Helm chart owns (`spec.serveConfigV2`), patched through
  the Kubernetes API; KubeRay applies the new config to the running cluster and reports each
  application's status in the RayService's `status.activeServiceStatus`.

`rollout` drives either: write the config, wait until Serve reports every replica of the
deployment healthy on it (or failed), run the caller's health check (a generation on the new
model), and on any failure write the previous checkpoint back and wait for that too.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import yaml

Progress = Callable[[str], None]
# Ray Serve's application and deployment statuses (ray.serve.schema.ApplicationStatus,
# DeploymentStatus), as both its REST API and KubeRay's RayService status report them.
APP_FAILED = {"DEPLOY_FAILED", "UNHEALTHY"}
DEPLOYMENT_FAILED = {"DEPLOY_FAILED", "UNHEALTHY"}


class DeployError(Exception):
    """A switch that did not happen; the message says what the replicas serve now."""


@dataclass(frozen=True)
class Rollout:
    """Where a switch stands: `running` once every replica serves the config written last."""

    state: Literal["updating", "running", "failed"]
    message: str = ""
    replicas: int | None = None  # replicas of the deployment Serve reports, when it does


class ServeSwitch(Protocol):
    """Where the served checkpoint is configured."""

    description: str

    async def current(self) -> str | None:
        """The checkpoint the deployment's config names now (None: none set there)."""
        ...

    async def apply(self, checkpoint: str) -> Any:
        """Write `checkpoint` into the deployment's user_config; returns a token for `status`."""
        ...

    async def status(self, token: Any) -> Rollout:
        """How the config written with `token` is rolling out."""
        ...


def _with_checkpoint(app: dict[str, Any], deployment: str, checkpoint: str) -> dict[str, Any]:
    """The application's config with `deployment`'s user_config naming `checkpoint` (other keys of
    the user_config, and other deployments, kept)."""
    app = copy.deepcopy(app)
    deployments = app.setdefault("deployments", [])
    for entry in deployments:
        if entry.get("name") == deployment:
            entry["user_config"] = {**(entry.get("user_config") or {}), "checkpoint": checkpoint}
            break
    else:
        deployments.append({"name": deployment, "user_config": {"checkpoint": checkpoint}})
    return app


def _checkpoint_in(app: dict[str, Any], deployment: str) -> str | None:
    for entry in app.get("deployments") or []:
        if entry.get("name") == deployment:
            named = (entry.get("user_config") or {}).get("checkpoint")
            if named:
                return str(named)
    named = (app.get("args") or {}).get("checkpoint")  # what the replicas load before any user_config
    return str(named) if named else None


def _judge(app_status: dict[str, Any] | None, deployment: str) -> Rollout:
    """One application's reported status → a Rollout (the same fields in Serve's REST API and in
    KubeRay's applicationStatuses, except for where the deployments are listed)."""
    if not app_status:
        return Rollout("updating", "the application is not reported yet")
    state = str(app_status.get("status", ""))
    deployments = app_status.get("deployments") or app_status.get("serveDeploymentStatuses") or {}
    mine = deployments.get(deployment) or {}
    replicas = mine.get("replicas")
    count = len(replicas) if isinstance(replicas, list) else None
    message = str(mine.get("message") or app_status.get("message") or "")
    if state in APP_FAILED or mine.get("status") in DEPLOYMENT_FAILED:
        return Rollout("failed", message or f"the application is {state}", count)
    if state == "RUNNING" and mine.get("status") == "HEALTHY":
        return Rollout("running", message, count)
    return Rollout("updating", f"{state.lower() or 'pending'}: {message}".rstrip(": "), count)


class ServeApiSwitch:
    """Serve's REST API on the Ray dashboard."""

    def __init__(self, dashboard_url: str, app: str, deployment: str, timeout_s: float = 30.0):
        self.url = dashboard_url.rstrip("/") + "/api/serve/applications/"
        self.app, self.deployment = app, deployment
        self.description = f"Serve application {app!r} at {dashboard_url}"
        from gateway.jobs.ray_jobs import ray_auth_headers  # Ray's token, where the cluster wants one

        self._http = httpx.AsyncClient(timeout=timeout_s, trust_env=False, headers=ray_auth_headers())

    async def _details(self) -> dict[str, Any]:
        try:
            r = await self._http.get(self.url)
            r.raise_for_status()
        except httpx.HTTPError as e:
            raise DeployError(f"Serve's REST API at {self.url}: {e}") from None
        details: dict[str, Any] = r.json()
        return details

    async def _app(self, details: dict[str, Any]) -> dict[str, Any]:
        app = (details.get("applications") or {}).get(self.app)
        if app is None:
            names = ", ".join(details.get("applications") or {}) or "none"
            raise DeployError(f"no Serve application {self.app!r} on the cluster (it has: {names})")
        if not app.get("deployed_app_config"):
            raise DeployError(
                f"the Serve application {self.app!r} was deployed from code (serve.run), not from a "
                "config: Serve's REST API cannot update it; deploy it with a config (serve deploy, "
                "chatforge inference serve)"
            )
        result: dict[str, Any] = app
        return result

    async def current(self) -> str | None:
        app = await self._app(await self._details())
        return _checkpoint_in(app["deployed_app_config"], self.deployment)

    async def apply(self, checkpoint: str) -> float:
        details = await self._details()
        await self._app(details)
        before = details["applications"][self.app].get("last_deployed_time_s") or 0.0
        apps = []
        for name, app in details["applications"].items():
            config = app.get("deployed_app_config")
            if not config:
                raise DeployError(f"the Serve application {name!r} has no config: a PUT would remove it")
            apps.append(_with_checkpoint(config, self.deployment, checkpoint) if name == self.app else config)
        body: dict[str, Any] = {"applications": apps}
        for key in ("proxy_location", "http_options", "grpc_options", "target_capacity"):
            if details.get(key) is not None:
                body[key] = details[key]
        try:
            r = await self._http.put(self.url, json=body)
        except httpx.HTTPError as e:
            raise DeployError(f"Serve's REST API at {self.url}: {e}") from None
        if r.status_code >= 400:
            raise DeployError(f"Serve refused the config ({r.status_code}): {r.text[:500]}")
        return float(before)

    async def status(self, token: Any) -> Rollout:
        app = (await self._details()).get("applications", {}).get(self.app)
        if app is None:
            return Rollout("updating", "the application is not reported yet")
        if (app.get("last_deployed_time_s") or 0.0) <= token:
            return Rollout("updating", "Serve has not taken the new config yet")
        return _judge(app, self.deployment)

    async def close(self) -> None:
        await self._http.aclose()


class RayServiceSwitch:
    """The chart's RayService: its serveConfigV2 patched through the Kubernetes API."""

    GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"

    def __init__(self, api_client: Any, namespace: str, name: str, app: str, deployment: str):
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self._api_client = api_client
        self.namespace, self.name, self.app, self.deployment = namespace, name, app, deployment
        self.description = f"RayService {namespace}/{name}, application {app!r}"

    async def _get(self) -> dict[str, Any]:
        try:
            obj: Any = await asyncio.to_thread(
                self._api.get_namespaced_custom_object,
                self.GROUP, self.VERSION, self.namespace, self.PLURAL, self.name,
            )  # fmt: skip
        except Exception as e:
            raise DeployError(f"cannot read {self.description}: {_kube_reason(e)}") from None
        result: dict[str, Any] = obj
        return result

    def _config(self, obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            config = yaml.safe_load(obj["spec"]["serveConfigV2"]) or {}
        except (KeyError, yaml.YAMLError) as e:
            raise DeployError(f"{self.description} has no readable serveConfigV2: {e}") from None
        for app in config.get("applications") or []:
            if app.get("name") == self.app:
                return config, app
        raise DeployError(f"{self.description}: serveConfigV2 has no application {self.app!r}")

    async def current(self) -> str | None:
        _, app = self._config(await self._get())
        return _checkpoint_in(app, self.deployment)

    async def apply(self, checkpoint: str) -> int:
        obj = await self._get()
        config, app = self._config(obj)
        config["applications"] = [
            _with_checkpoint(a, self.deployment, checkpoint) if a is app else a
            for a in config["applications"]
        ]
        patch = {
            # resourceVersion makes the write conditional: a concurrent edit is a 409, not lost
            "metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")},
            "spec": {"serveConfigV2": yaml.safe_dump(config, sort_keys=False)},
        }
        try:
            patched: Any = await asyncio.to_thread(
                self._api.patch_namespaced_custom_object,
                self.GROUP, self.VERSION, self.namespace, self.PLURAL, self.name, patch,
            )  # fmt: skip
        except Exception as e:
            raise DeployError(f"cannot patch {self.description}: {_kube_reason(e)}") from None
        return int(patched["metadata"].get("generation") or 0)

    async def status(self, token: Any) -> Rollout:
        obj = await self._get()
        status = obj.get("status") or {}
        if int(status.get("observedGeneration") or 0) < token:
            return Rollout("updating", "KubeRay has not taken the new serve config yet")
        apps = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        return _judge(apps.get(self.app), self.deployment)

    async def close(self) -> None:
        pass  # the api client belongs to whoever made it


def kube_api_client(kube_config: str = "") -> Any:
    """A Kubernetes API client from a kubeconfig path, or the pod's service account when empty."""
    from kubernetes import client, config

    try:
        if kube_config:
            config.load_kube_config(kube_config)
        else:
            config.load_incluster_config()
    except Exception as e:
        raise DeployError(
            f"no Kubernetes configuration ({e}): set CHATFORGE_GATEWAY_KUBE_CONFIG or run in a pod"
        ) from None
    return client.ApiClient()


def _kube_reason(e: Exception) -> str:
    status, body = getattr(e, "status", None), getattr(e, "body", None)
    return f"HTTP {status}: {str(body)[:300]}" if status else str(e)


async def _wait(
    switch: ServeSwitch, token: Any, progress: Progress, timeout_s: float, poll_s: float
) -> Rollout:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        rollout = await switch.status(token)
        if rollout.state != "updating":
            return rollout
        line = rollout.message + (f" ({rollout.replicas} replicas)" if rollout.replicas is not None else "")
        if line != last:
            progress(f"replicas loading: {line}")
            last = line
        if time.monotonic() > deadline:
            return Rollout(
                "failed", f"not every replica serves it after {timeout_s:.0f} s ({rollout.message})"
            )
        await asyncio.sleep(poll_s)


async def rollout(
    switch: ServeSwitch,
    checkpoint: str,
    health_check: Callable[[str], Awaitable[None]],
    progress: Progress,
    *,
    timeout_s: float,
    poll_s: float = 0.5,
) -> None:
    """Switch every replica to `checkpoint`, check it, and on failure go back to what was served.

    `health_check(checkpoint)` raises when the new model does not serve (e.g. its generation ends
    in an error). Raises DeployError saying what failed and what is served now.
    """
    previous = await switch.current()
    progress(f"writing checkpoint {checkpoint} into {switch.description}")
    token = await switch.apply(checkpoint)
    outcome = await _wait(switch, token, progress, timeout_s, poll_s)
    reason = outcome.message
    if outcome.state == "running":
        progress("every replica reports the new config; checking a generation")
        try:
            await health_check(checkpoint)
            return
        except Exception as e:
            reason = f"health check failed: {e}"
    else:
        reason = f"Serve reports the switch failed: {reason}"
    if not previous or previous == checkpoint:
        raise DeployError(f"{reason}; there is no previous checkpoint to go back to")
    progress(f"{reason}; rolling back to {previous}")
    token = await switch.apply(previous)
    back = await _wait(switch, token, progress, timeout_s, poll_s)
    if back.state != "running":
        raise DeployError(f"{reason}; the rollback to {previous} failed too: {back.message}")
    raise DeployError(f"{reason}; rolled back: every replica serves {previous} again")
