"""Each light image carries only its deployable: installed in a fresh venv the way its Dockerfile
installs it (the same sources copied, `.[<extra>]` and nothing else), it imports and starts, and
PyTorch, Ray, the trainer and the other deployables cannot even be imported there.

No Docker engine is needed: the build context is copied as the Dockerfile's COPY lines say, the
install runs with uv (the dev extra; `python -m venv` and pip when uv is missing, several times
slower) from PyPI or the installer's cache, and the image's own build check (its `python -c` line)
and its entry point (`--help`) run with the venv's python.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .chart import ROOT
from .dockerfile import copy_sources, dockerfile_of, entrypoint, parse, pip_installs

pytestmark = pytest.mark.slow  # one venv per image: ~5 s each with uv's cache, ~1 min cold

# deployable folder -> (extra, the modules the image runs)
LIGHT = {
    "tokenizer-svc": ("tokenizer", ("tokenizer_svc.server", "tokenizer_svc.cli", "tokenizer_svc.__main__")),
    "services/sandbox": ("sandbox", ("sandbox.app", "sandbox.cli", "sandbox.executor", "sandbox.__main__")),
    "services/gateway": (
        "gateway",
        (
            "gateway.app", "gateway.cli", "gateway.runtime", "gateway.remote_inference",
            "gateway.jobs.kuberay", "gateway.jobs.ray_jobs", "gateway.codec",
        ),
    ),
}  # fmt: skip
PACKAGES = {"tokenizer-svc": "tokenizer_svc", "services/sandbox": "sandbox", "services/gateway": "gateway"}
# PyTorch, Ray and the training stack; the trainer and the engine (torch code) themselves.
HEAVY = ("torch", "ray", "safetensors", "datasets", "matplotlib", "pyarrow", "trainer", "inference_svc")

PROBE = """
import importlib, importlib.util, json, sys
modules, unwanted = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for m in modules:
    if not m.endswith("__main__"):
        importlib.import_module(m)
    else:
        assert importlib.util.find_spec(m) is not None, m
print(json.dumps({
    "loaded": sorted(m for m in unwanted if m in sys.modules),
    "importable": sorted(m for m in unwanted if importlib.util.find_spec(m) is not None),
}))
"""


def build_context(dockerfile: Path, dest: Path) -> None:
    """Copy what the Dockerfile COPYs into the directory its `pip install` runs in."""
    workdir, install_dir, copies = "/", None, []
    for instruction in parse(dockerfile):
        if instruction.keyword == "WORKDIR":
            workdir = posixpath.join(workdir, instruction.arguments)
        elif instruction.keyword in ("COPY", "ADD") and copy_sources(instruction):
            target = posixpath.normpath(posixpath.join(workdir, shlex.split(instruction.arguments)[-1]))
            copies.append((copy_sources(instruction), target, instruction.arguments.rstrip().endswith("/")))
        elif (
            instruction.keyword == "RUN" and install_dir is None and 'pip install ".' in instruction.arguments
        ):
            install_dir = workdir
    assert install_dir is not None, f'{dockerfile}: no `pip install ".[...]"` of the project'
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for sources, target, into_dir in copies:
        if target != install_dir and not target.startswith(install_dir + "/"):
            continue  # copied elsewhere (the gateway's web/): not part of the install
        local = dest / posixpath.relpath(target, install_dir)
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, local, ignore=ignore, dirs_exist_ok=True)
            else:
                out = local / path.name if into_dir or len(sources) > 1 else local
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)


def make_venv(venv: Path, requirement: str) -> None:
    """A fresh venv with `requirement` installed: uv when the dev extra brought it, else pip."""
    uv = Path(sys.executable).with_name("uv")
    uv_path = str(uv) if uv.exists() else shutil.which("uv")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if uv_path:
        steps = [
            [uv_path, "venv", "--quiet", "--python", sys.executable, str(venv)],
            [uv_path, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), requirement],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", requirement],
        ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, env=env)
        assert done.returncode == 0, f"`{shlex.join(step)}` failed:\n{done.stderr[-3000:]}"


def image_checks(dockerfile: Path) -> list[str]:
    """The `python -c ...` checks the image runs while it is built."""
    checks = []
    for instruction in parse(dockerfile):
        if instruction.keyword == "RUN":
            for part in instruction.arguments.split("&&"):
                words = shlex.split(part)
                if words[:2] == ["python", "-c"]:
                    checks.append(words[2])
    return checks


def in_venv(argv: list[str], venv: Path) -> list[str]:
    """The image's argv with its `python`/`chatforge` taken from the venv (tini and the like dropped)."""
    for i, word in enumerate(argv):
        if word in ("python", "python3"):
            return [str(venv / "bin" / "python"), *argv[i + 1 :]]
        if word == "chatforge":
            return [str(venv / "bin" / "chatforge"), *argv[i + 1 :]]
    raise AssertionError(f"the entry point {argv} runs neither python nor chatforge")


@pytest.mark.parametrize("folder", sorted(LIGHT))
def test_light_image_installs_and_runs_with_only_its_extra(folder: str, tmp_path: Path) -> None:
    extra, modules = LIGHT[folder]
    dockerfile = dockerfile_of(folder)
    assert f'".[{extra}]"' in pip_installs(dockerfile), f"{folder}/Dockerfile does not install .[{extra}]"
    context, venv = tmp_path / "src", tmp_path / "venv"
    build_context(dockerfile, context)
    others = sorted(set(PACKAGES.values()) - {PACKAGES[folder]})
    make_venv(venv, f"{context}[{extra}]")
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HOME"] = str(tmp_path)  # nothing from the developer's home (a ~/.ray token, user site)

    def run(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
        assert done.returncode == 0, f"`{shlex.join(argv)}` failed:\n{done.stderr[-3000:]}"
        return done.stdout

    report = json.loads(run([python, "-c", PROBE, json.dumps(modules), json.dumps([*HEAVY, *others])]))
    assert report == {"loaded": [], "importable": []}, f"the {extra} image could import {report}"
    for check in image_checks(dockerfile):  # the image's own build-time check
        run([python, "-c", check])
    run([*in_venv(entrypoint(dockerfile), venv), "--help"])  # the image's entry point starts
    assert "usage" in run([str(venv / "bin" / "chatforge"), "--help"])  # the CLI leaves out absent parts
