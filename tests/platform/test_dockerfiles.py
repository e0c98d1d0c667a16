"""Dockerfiles, checked statically (no Docker engine here): sources exist, the image runs a real
chatforge command, and the light images carry no PyTorch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from .chart import ROOT
from .dockerfile import (
    DEPLOYABLES,
    check_command,
    command,
    copy_sources,
    dockerfile_of,
    dockerfiles,
    parse,
    pip_installs,
)

# The gateway, tokenizer and sandbox images carry no PyTorch; the inference and trainer images do.
LIGHT = {"tokenizer-svc": "tokenizer", "services/sandbox": "sandbox", "services/gateway": "gateway"}
HEAVY = {"inference-svc": "serve", "trainer": "train"}


def folder(path: Path) -> str:
    return path.parent.relative_to(ROOT).as_posix()


def test_every_deployable_has_a_dockerfile_and_nothing_else_does() -> None:
    assert sorted(LIGHT | HEAVY) == sorted(DEPLOYABLES)
    found = {folder(p) for p in dockerfiles()}
    missing, unknown = set(DEPLOYABLES) - found, found - set(DEPLOYABLES)
    assert not missing, f"deployables without a Dockerfile: {sorted(missing)}"
    assert not unknown, f"Dockerfiles outside the deployables: {sorted(unknown)}"


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_copy_sources_exist_in_the_build_context(deployable: str) -> None:
    # Every image is built with the repository root as its context (the project is one distribution).
    copies = [i for i in parse(dockerfile_of(deployable)) if i.keyword in ("COPY", "ADD")]
    assert copies, "the image copies nothing from the project"
    for instruction in copies:
        for source in copy_sources(instruction):
            assert list(ROOT.glob(source.rstrip("/"))), f"COPY {source}: not in the build context"


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_image_runs_a_real_chatforge_command(deployable: str) -> None:
    problem = check_command(command(dockerfile_of(deployable)))
    assert problem is None, f"{deployable}/Dockerfile: {problem}"


def extra_requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"][extra]


@pytest.mark.parametrize("deployable", sorted(LIGHT))
def test_light_images_install_no_torch(deployable: str) -> None:
    extra = LIGHT[deployable]
    installs = pip_installs(dockerfile_of(deployable))
    assert any(f".[{extra}]" in line for line in installs), f"the image does not install .[{extra}]"
    for line in installs:
        assert "torch" not in line, f"pip install {line}"
        assert not re.search(r"\[(train|serve|all)\b", line), f"pip install {line}"
    # ...and the extra itself does not pull torch in.
    for requirement in extra_requirements(extra):
        name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
        assert name != "torch" and not requirement.startswith("chatforge["), requirement


@pytest.mark.parametrize("deployable", sorted(HEAVY))
def test_torch_images_install_torch_first_from_a_chosen_index(deployable: str) -> None:
    path = dockerfile_of(deployable)
    text = path.read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL", text, re.M), "CUDA builds need a TORCH_INDEX_URL build arg"
    installs = pip_installs(path)
    torch_at = next(i for i, line in enumerate(installs) if "torch" in line.lower())
    extra_at = next(i for i, line in enumerate(installs) if f".[{HEAVY[deployable]}]" in line)
    assert torch_at < extra_at, "torch must be installed before the extra (else pip picks its own build)"
    assert "TORCH_INDEX_URL" in installs[torch_at]
