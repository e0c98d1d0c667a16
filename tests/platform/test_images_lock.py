"""The images' pins agree with the project: docker/constraints.txt (the lock every image installs
from) satisfies pyproject.toml's requirements, Ray's version is one (pyproject, lock, chart), and
PyTorch's is the Makefile's."""

from __future__ import annotations

import re
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .chart import CHART, ROOT
from .dockerfile import parse

EXTRAS = ("train", "serve", "gateway", "tokenizer", "sandbox")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"docker/constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = Version(version)
    return pins


def requirements(extra: str) -> list[Requirement]:
    return [
        Requirement(r)
        for r in PROJECT["project"]["dependencies"] + PROJECT["project"]["optional-dependencies"][extra]
    ]


@pytest.mark.parametrize("extra", EXTRAS)
def test_the_lock_pins_every_requirement_within_its_range(extra: str) -> None:
    pins = lock()
    for requirement in requirements(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} ({extra}) is not in docker/constraints.txt: run docker/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"docker/constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}: run docker/lock.sh"
        )


def test_the_build_backend_is_locked() -> None:
    pins = lock()
    for requirement in map(Requirement, PROJECT["build-system"]["requires"]):
        name = canonicalize_name(requirement.name)
        assert name in pins and requirement.specifier.contains(pins[name]), requirement


def test_ray_has_one_version() -> None:
    pinned = set()
    for extra in ("train", "serve"):
        (ray,) = [r for r in requirements(extra) if r.name == "ray"]
        (spec,) = ray.specifier
        assert spec.operator == "==", (
            f"pyproject's {ray} ({extra}): pin Ray exactly, images and chart follow it"
        )
        pinned.add(Version(spec.version))
    assert len(pinned) == 1, f"the train and serve extras pin different Rays: {pinned}"
    (version,) = pinned
    assert lock()["ray"] == version, "docker/constraints.txt: run docker/lock.sh"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert Version(values["ray"]["version"]) == version, "charts/chatforge/values.yaml ray.version"
    # The gateway has no Ray to ask; the RayJobs it writes name the version its setting defaults to.
    from gateway.settings import Settings

    default = Settings.model_fields["kube_ray_version"].default
    assert Version(default) == version, "services/gateway/gateway/settings.py kube_ray_version"


def test_torch_is_the_makefiles() -> None:
    match = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "the Makefile pins TORCH_SPEC"
    version = Version(match.group(1))
    assert lock()["torch"] == version
    for folder in ("inference-svc", "trainer"):
        args = [i.arguments for i in parse(ROOT / folder / "Dockerfile") if i.keyword == "ARG"]
        (spec,) = [a.split("=", 1)[1] for a in args if a.startswith("TORCH_SPEC=")]
        assert Version(spec.removeprefix("torch==")).public == version.public, f"{folder}/Dockerfile: {spec}"
    assert "torch==" + str(version) in (ROOT / "docker" / "lock.in").read_text()
