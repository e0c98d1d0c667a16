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


# The images that are not a deployable's: Redis and Prometheus for compose, from Debian's packages.
SUPPORT = ("docker/redis.Dockerfile", "docker/prometheus.Dockerfile")
ALL_IMAGES = [f"{d}/Dockerfile" for d in DEPLOYABLES] + list(SUPPORT)
PUBLIC_BASES = {"python:3.11-slim-bookworm", "debian:bookworm-slim"}
# What no build context may carry (the inference context was 2.6 GB without its .dockerignore).
NEVER_SENT = (".venv", ".git", "data", "runs", "artifacts", "tests", "bench")


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_base_is_a_build_argument_defaulting_to_a_public_image(image: str) -> None:
    instructions = parse(ROOT / image)
    first = instructions[0]
    assert first.keyword == "ARG" and first.arguments.startswith("BASE="), (
        f"{image}: start with ARG BASE=<image>"
    )
    assert first.arguments.split("=", 1)[1] in PUBLIC_BASES
    stages = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            assert words[0] == "${BASE}", (
                f"{image}: FROM {instruction.arguments} (every stage starts from BASE)"
            )
            stages.append(words[2] if len(words) == 3 and words[1].upper() == "AS" else None)
    assert stages, image


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_python_images_copy_only_the_built_venv_into_the_runtime_stage(deployable: str) -> None:
    instructions = parse(dockerfile_of(deployable))
    froms = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert len(froms) == 2 and instructions[froms[0]].arguments.endswith("AS builder"), (
        "a builder stage, then the runtime"
    )
    runtime = instructions[froms[1] :]
    assert any(i.keyword == "COPY" and i.arguments == "--from=builder /opt/venv /opt/venv" for i in runtime)
    assert not any("pip install" in i.arguments for i in runtime), (
        "nothing is installed with pip in the runtime stage"
    )
    env = " ".join(i.arguments for i in runtime if i.keyword == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_the_image_runs_as_a_numeric_user(image: str) -> None:
    users = [i.arguments for i in parse(ROOT / image) if i.keyword == "USER"]
    assert users, f"{image}: no USER"
    assert users[-1].isdigit(), f"{image}: USER {users[-1]} (numeric, so runAsNonRoot can check it)"
    if image != "services/sandbox/Dockerfile":  # root with four capabilities, by design (its README)
        assert users[-1] != "0", image


@pytest.mark.parametrize("image", ALL_IMAGES)
def test_every_image_has_its_own_dockerignore(image: str) -> None:
    ignore = ROOT / (image + ".dockerignore")
    assert ignore.is_file(), f"{image}: no {ignore.name}, the whole repository is sent to the build"
    patterns = [
        line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    if patterns == ["*"]:  # copies nothing from the context
        assert not [i for i in parse(ROOT / image) if i.keyword in ("COPY", "ADD") and copy_sources(i)]
        return
    for path in NEVER_SENT:
        assert path in patterns, f"{ignore.name} sends {path}/"


@pytest.mark.parametrize("deployable", DEPLOYABLES)
def test_only_the_images_own_wheelhouse_is_sent(deployable: str) -> None:
    extra = {**LIGHT, **HEAVY}[deployable]
    patterns = (ROOT / deployable / "Dockerfile.dockerignore").read_text().splitlines()
    assert "docker/wheelhouse/*" in patterns and f"!docker/wheelhouse/{extra}" in patterns
    assert patterns.index("docker/wheelhouse/*") < patterns.index(f"!docker/wheelhouse/{extra}")
    text = dockerfile_of(deployable).read_text()
    assert f"PIP_FIND_LINKS=/wheels/{extra};" in text and "PIP_NO_INDEX=1" in text
    assert "PIP_CONSTRAINT=/src/docker/constraints.txt" in text, "every version from the lock"
