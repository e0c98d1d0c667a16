"""The RayService switch's failure paths, with the test playing KubeRay: the gateway's deployer
patches the RayService through the real kubernetes client (the emulator validates it against the
CRD and keeps resourceVersion and generation); the test writes the status KubeRay would.

The happy path through a real Serve is tests/gateway/test_kuberay_rehearsal.py; through Serve's
REST API, tests/gateway/test_deploy_serve.py.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from typing import Any

import pytest
import yaml
from gateway.deployer import DeployError, RayServiceSwitch, rollout

from tests.gateway.kuberay_rehearsal import RAYSERVICE_CRD, serve_rayservices

NS = "chatforge-test"
APP, DEPLOYMENT = "chatforge", "inference"


def service(name: str, checkpoint: str) -> dict[str, Any]:
    config = {
        "applications": [
            {
                "name": APP, "import_path": "inference_svc.serve:app_builder", "route_prefix": "/",
                "args": {"checkpoint": checkpoint},
                "deployments": [{"name": DEPLOYMENT, "user_config": {"checkpoint": checkpoint}}],
            }
        ]
    }  # fmt: skip
    return {
        "apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": name},
        "spec": {"serveConfigV2": yaml.safe_dump(config), "rayClusterConfig": {
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
                {"name": "ray-head", "image": "chatforge/inference:test"}]}}}}},
    }  # fmt: skip


@pytest.fixture
def rayservices(kube):
    if not RAYSERVICE_CRD.is_file():
        pytest.skip(f"KubeRay's RayService CRD is not at {RAYSERVICE_CRD}")
    return serve_rayservices(kube)


def create(kube, store, name: str, checkpoint: str) -> None:
    from kubernetes import client

    api = client.CustomObjectsApi(kube.api_client())
    api.create_namespaced_custom_object("ray.io", "v1", NS, "rayservices", service(name, checkpoint))
    assert (NS, name) in store.objects


def checkpoint_of(obj: dict[str, Any]) -> str:
    app = yaml.safe_load(obj["spec"]["serveConfigV2"])["applications"][0]
    return str(app["deployments"][0]["user_config"]["checkpoint"])


class Operator:
    """Plays KubeRay: once a generation is written, reports it observed with the application's
    status, failed for the checkpoints in `fails`."""

    def __init__(self, store, name: str, fails: set[str], observe: bool = True):
        self.store, self.name, self.fails, self.observe = store, name, fails, observe
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            with self.store.lock:
                obj = self.store.objects[(NS, self.name)]
                generation = obj["metadata"]["generation"]
                if not self.observe or (obj.get("status") or {}).get("observedGeneration") == generation:
                    continue
                bad = checkpoint_of(obj) in self.fails
                app_state, dep_state = ("DEPLOY_FAILED", "UNHEALTHY") if bad else ("RUNNING", "HEALTHY")
                message = "reconfigure raised: CheckpointError: no weights" if bad else ""
                status = {
                    "observedGeneration": generation,
                    "activeServiceStatus": {"applicationStatuses": {APP: {
                        "status": app_state, "message": "",
                        "serveDeploymentStatuses": {DEPLOYMENT: {"status": dep_state, "message": message}},
                    }}},
                }  # fmt: skip
                candidate = {**copy.deepcopy(obj), "status": status}
                self.store.validator.validate(candidate)
                obj["status"] = status

    def __enter__(self) -> Operator:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def switch(kube, name: str) -> RayServiceSwitch:
    return RayServiceSwitch(kube.api_client(), NS, name, APP, DEPLOYMENT)


async def healthy(checkpoint: str) -> None:
    return None


def test_a_switch_serve_reports_failed_is_rolled_back(kube, rayservices):
    create(kube, rayservices, "dep-fail", "r/sft/step_000001")
    lines: list[str] = []
    with Operator(rayservices, "dep-fail", fails={"r/broken/step_000001"}):
        asyncio.run(
            rollout(switch(kube, "dep-fail"), "r/sft/step_000002", healthy, lines.append, timeout_s=30)
        )
        assert checkpoint_of(rayservices.objects[(NS, "dep-fail")]) == "r/sft/step_000002"
        with pytest.raises(DeployError) as failed:
            asyncio.run(
                rollout(switch(kube, "dep-fail"), "r/broken/step_000001", healthy, lines.append, timeout_s=30)
            )
    message = str(failed.value)
    assert "Serve reports the switch failed" in message and "no weights" in message, message
    assert "rolled back: every replica serves r/sft/step_000002 again" in message
    obj = rayservices.objects[(NS, "dep-fail")]
    assert checkpoint_of(obj) == "r/sft/step_000002"
    assert obj["metadata"]["generation"] == 4  # created, switched, switched, rolled back
    assert any(line.startswith("writing checkpoint r/broken/step_000001") for line in lines), lines
    assert any("rolling back to r/sft/step_000002" in line for line in lines), lines


def test_a_failed_health_check_is_rolled_back(kube, rayservices):
    create(kube, rayservices, "dep-health", "r/sft/step_000001")

    async def generation_fails(checkpoint: str) -> None:
        if checkpoint == "r/nan/step_000001":
            raise DeployError("a generation on it failed: the model produced NaN logits")

    with Operator(rayservices, "dep-health", fails=set()):
        with pytest.raises(DeployError, match="health check failed: a generation on it failed"):
            asyncio.run(
                rollout(
                    switch(kube, "dep-health"), "r/nan/step_000001", generation_fails, print, timeout_s=30
                )
            )
    assert checkpoint_of(rayservices.objects[(NS, "dep-health")]) == "r/sft/step_000001"


def test_an_operator_that_never_answers_times_out_and_says_the_rollback_failed_too(kube, rayservices):
    create(kube, rayservices, "dep-silent", "r/sft/step_000001")
    with Operator(rayservices, "dep-silent", fails=set(), observe=False):
        with pytest.raises(DeployError) as failed:
            asyncio.run(
                rollout(
                    switch(kube, "dep-silent"), "r/mid/step_000001", healthy, print, timeout_s=1, poll_s=0.1
                )
            )
    assert "not every replica serves it after 1 s" in str(failed.value)
    assert "the rollback to r/sft/step_000001 failed too" in str(failed.value)


def test_a_concurrent_edit_is_a_conflict_not_a_lost_write(kube, rayservices):
    create(kube, rayservices, "dep-race", "r/sft/step_000001")
    race = switch(kube, "dep-race")
    original_get = race._get

    async def stale_then_edited() -> dict[str, Any]:
        obj = await original_get()
        with rayservices.lock:  # someone (helm upgrade) writes the object after our read
            live = rayservices.objects[(NS, "dep-race")]
            live["metadata"]["resourceVersion"] = str(int(live["metadata"]["resourceVersion"]) + 1)
        return obj

    race._get = stale_then_edited  # type: ignore[method-assign]
    with pytest.raises(DeployError, match="cannot patch RayService chatforge-test/dep-race.*409"):
        asyncio.run(race.apply("r/mid/step_000001"))
    assert checkpoint_of(rayservices.objects[(NS, "dep-race")]) == "r/sft/step_000001"


def test_a_missing_rayservice_or_application_is_a_clear_error(kube, rayservices):
    with pytest.raises(DeployError, match="cannot read RayService chatforge-test/nope.*404"):
        asyncio.run(switch(kube, "nope").current())
    create(kube, rayservices, "dep-other", "r/sft/step_000001")
    other = RayServiceSwitch(kube.api_client(), NS, "dep-other", "not-there", DEPLOYMENT)
    with pytest.raises(DeployError, match="serveConfigV2 has no application 'not-there'"):
        asyncio.run(other.current())
