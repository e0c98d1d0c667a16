"""Dockerfiles, checked statically (no Docker engine here): sources exist, the image runs a real
chatforge command, and the light images carry no PyTorch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from .chart import ROOT
from .dockerfile import check_command, command, copy_sources, dockerfiles, parse, pip_installs

FILES = dockerfiles()
IDS = [str(p.parent.relative_to(ROOT)) for p in FILES]
# DESIGN.md: "the gateway, tokenizer and sandbox images carry no PyTorch".
LIGHT = {"tokenizer-svc": "tokenizer", "services/sandbox": "sandbox", "services/gateway": "gateway"}
HEAVY = {"inference-svc": "serve", "trainer": "train"}


def folder(path: Path) -> str:
    return str(path.parent.relative_to(ROOT))


def test_every_deployable_that_has_a_dockerfile_is_known() -> None:
    assert FILES, "no Dockerfile in the project"
    assert {folder(p) for p in FILES} <= set(LIGHT) | set(HEAVY)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_copy_sources_exist_in_the_build_context(path: Path) -> None:
    # Every image is built with the repository root as its context (the project is one distribution).
    copies = [i for i in parse(path) if i.keyword in ("COPY", "ADD")]
    assert copies, "the image copies nothing from the project"
    for instruction in copies:
        for source in copy_sources(instruction):
            assert list(ROOT.glob(source.rstrip("/"))), f"COPY {source}: not in the build context"


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_image_runs_a_real_chatforge_command(path: Path) -> None:
    problem = check_command(command(path))
    assert problem is None, f"{path.relative_to(ROOT)}: {problem}"


def extra_requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"][extra]


@pytest.mark.parametrize("path", [p for p in FILES if folder(p) in LIGHT], ids=lambda p: folder(p))
def test_light_images_install_no_torch(path: Path) -> None:
    extra = LIGHT[folder(path)]
    installs = pip_installs(path)
    assert any(f".[{extra}]" in line for line in installs), f"the image does not install .[{extra}]"
    for line in installs:
        assert "torch" not in line, f"pip install {line}"
        assert not re.search(r"\[(train|serve|all)\b", line), f"pip install {line}"
    # ...and the extra itself does not pull torch in.
    for requirement in extra_requirements(extra):
        name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]
        assert name != "torch" and not requirement.startswith("chatforge["), requirement


@pytest.mark.parametrize("path", [p for p in FILES if folder(p) in HEAVY], ids=lambda p: folder(p))
def test_torch_images_install_torch_first_from_a_chosen_index(path: Path) -> None:
    text = path.read_text()
    assert re.search(r"^ARG TORCH_INDEX_URL", text, re.M), "CUDA builds need a TORCH_INDEX_URL build arg"
    installs = pip_installs(path)
    torch_at = next(i for i, line in enumerate(installs) if "torch" in line.lower())
    extra_at = next(i for i, line in enumerate(installs) if f".[{HEAVY[folder(path)]}]" in line)
    assert torch_at < extra_at, "torch must be installed before the extra (else pip picks its own build)"
    assert "TORCH_INDEX_URL" in installs[torch_at]
