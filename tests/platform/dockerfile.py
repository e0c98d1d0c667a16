"""Read Dockerfiles without Docker: instructions, COPY sources, and the command the image runs."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from chatforge.cli import build_parser

from .chart import ROOT

SKIP_DIRS = {".venv", ".git", "node_modules"}
# The five deployables, each built from the Dockerfile in its folder. Tests that check a
# Dockerfile take it from here (not from what a search happens to find), so a deleted or renamed
# one fails them instead of quietly removing their cases.
DEPLOYABLES = ("inference-svc", "services/gateway", "services/sandbox", "tokenizer-svc", "trainer")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # continuation lines joined, comments dropped


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the project (each deployable folder holds its own)."""
    return sorted(
        p for p in ROOT.rglob("Dockerfile") if not SKIP_DIRS & set(p.relative_to(ROOT).parts) and p.is_file()
    )


def dockerfile_of(deployable: str) -> Path:
    """The Dockerfile of a deployable folder; a missing one is a test failure, never a skip."""
    path = ROOT / deployable / "Dockerfile"
    assert path.is_file(), f"{deployable}/Dockerfile is missing: the deployable has no image to build"
    return path


def parse(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comments may sit inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def copy_sources(instruction: Instruction) -> list[str]:
    """Sources of a COPY/ADD from the build context (a COPY --from=stage copies from an image)."""
    words = shlex.split(instruction.arguments)
    if any(w.startswith("--from") for w in words):
        return []
    words = [w for w in words if not w.startswith("--")]
    if words and words[0].startswith("["):
        words = json.loads(instruction.arguments[instruction.arguments.index("[") :])
    return words[:-1]


def exec_form(instruction: Instruction | None) -> list[str]:
    if instruction is None:
        return []
    assert instruction.arguments.startswith("["), (
        f"{instruction.keyword} {instruction.arguments}: use the exec (JSON) form, so signals reach the process"
    )
    return json.loads(instruction.arguments)


def entrypoint(path: Path) -> list[str]:
    """The image's ENTRYPOINT (what a compose `command` or a pod's `args` follow)."""
    return exec_form(next((i for i in reversed(parse(path)) if i.keyword == "ENTRYPOINT"), None))


def command(path: Path) -> list[str]:
    """The argv the image runs by default: ENTRYPOINT followed by CMD (the last of each)."""
    instructions = parse(path)
    entrypoint = next((i for i in reversed(instructions) if i.keyword == "ENTRYPOINT"), None)
    cmd = next((i for i in reversed(instructions) if i.keyword == "CMD"), None)
    return exec_form(entrypoint) + exec_form(cmd)


def check_command(argv: list[str]) -> str | None:
    """None when `argv` runs a real chatforge command with flags its parser accepts, else why not.

    Either the `chatforge` CLI (parsed in process) or `python -m <part>`, a part's own entry point
    for images that lack the other parts' dependencies (asked for --help in a subprocess).
    """
    for i, word in enumerate(argv):
        if word == "chatforge" or word.endswith("/chatforge"):
            try:
                args = build_parser().parse_args(argv[i + 1 :])
            except SystemExit:
                return f"`{shlex.join(argv)}` is not accepted by the chatforge CLI"
            return None if callable(getattr(args, "func", None)) else f"`{shlex.join(argv)}` names no command"
        if word == "-m" and i + 1 < len(argv):
            out = subprocess.run(
                [sys.executable, "-m", *argv[i + 1 :], "--help"], capture_output=True, text=True, timeout=60
            )
            return None if out.returncode == 0 else f"`{shlex.join(argv)}`: {out.stderr.strip()[-300:]}"
    return f"`{shlex.join(argv)}` runs neither the chatforge CLI nor a chatforge module"


def pip_installs(path: Path) -> list[str]:
    """The arguments of every `pip install` in the image's RUN instructions."""
    installs = []
    for instruction in parse(path):
        if instruction.keyword == "RUN":
            for part in re.split(r"&&|;", instruction.arguments):
                match = re.search(r"\bpip3? install (.*)", part)
                if match:
                    installs.append(match.group(1).strip())
    return installs
