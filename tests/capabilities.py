"""What this machine cannot run of the test suite, and the command that fixes each: one place.

`make test` runs this first (`python tests/capabilities.py`) and prints one summary before the
suite starts, instead of skip reasons scattered through pytest's output; the tests that skip take
their reason from here too (`why_not("chromium")`), so the summary and the skips say the same.
Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PROBE_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Capability:
    name: str
    needed_by: str  # the tests that need it
    fix: str  # the command (or step) that provides it
    probe: Callable[[], str | None]  # None when present, else what is missing


def _chromium() -> str | None:
    if Path(CHROMIUM).is_file() or shutil.which("chromium"):
        return None
    return f"no Chromium at {CHROMIUM}"


def _bubblewrap() -> str | None:
    return None if shutil.which("bwrap") else "no bubblewrap (bwrap)"


def _namespaces() -> str | None:
    """User, PID and network namespaces as the sandbox asks bubblewrap for them."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "no bubblewrap to create namespaces with (make deps installs it)"
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "true"]
    return _runs(argv, "bubblewrap cannot create user/pid/net namespaces here")


def _docker() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker command"
    problem = _runs([docker, "info", "--format", "{{.ServerVersion}}"], "no Docker engine answers")
    if problem:
        return problem
    return _runs([docker, "compose", "version"], "no docker compose plugin")


def _root() -> str | None:
    return None if os.geteuid() == 0 else f"running as uid {os.geteuid()}, not root"


def _cuda() -> str | None:
    return None if shutil.which("nvidia-smi") else "no NVIDIA GPU (nvidia-smi not found)"


def _docker_fix() -> str:
    start = "docker/dockerd.sh start" if (ROOT / "docker" / "dockerd.sh").is_file() else (
        "sudo dockerd --storage-driver=vfs --iptables=false --bridge=none &"
    )  # fmt: skip
    install = "make docker-deps" if "docker-deps:" in _makefile() else "sudo apt-get install docker.io"
    return f"{install}; {start}"


CAPABILITIES: tuple[Capability, ...] = (
    Capability("chromium", "browser tests (tests/web)", "make deps", _chromium),
    Capability("bubblewrap", "the sandbox's namespaces mode (tests/sandbox)", "make deps", _bubblewrap),
    Capability(
        "namespaces",
        "sandbox isolation tests (tests/sandbox)",
        "run where unprivileged user namespaces are allowed (sysctl kernel.unprivileged_userns_clone=1; "
        "a container needs --privileged or a seccomp profile that allows unshare)",
        _namespaces,
    ),  # fmt: skip
    Capability("docker", "image and compose tests (tests/platform)", "", _docker),
    Capability(
        "root", "per-run uids of the sandbox (tests/sandbox)", "run the tests as root (sudo make test)", _root
    ),
    Capability("cuda", "GPU tests (tests/gpu, -m gpu)", "a machine with an NVIDIA GPU and its driver", _cuda),
)


@cache
def why_not(name: str) -> str | None:
    """None when capability `name` is here; else a skip reason that says what is missing and how
    to get it."""
    cap = next((c for c in CAPABILITIES if c.name == name), None)
    if cap is None:
        raise KeyError(f"unknown capability {name!r}; known: {', '.join(c.name for c in CAPABILITIES)}")
    problem = cap.probe()
    if problem is None:
        return None
    return f"{problem}: {fix_of(cap)}"


def fix_of(cap: Capability) -> str:
    return _docker_fix() if cap.name == "docker" else cap.fix


def summary() -> tuple[str, int]:
    """The text `make test` prints first, and how many capabilities are missing."""
    missing = [(cap, cap.probe()) for cap in CAPABILITIES]
    missing = [(cap, problem) for cap, problem in missing if problem is not None]
    if not missing:
        return f"make test: this machine can run every test ({len(CAPABILITIES)} capabilities checked).", 0
    lines = [
        f"make test: {len(missing)} of {len(CAPABILITIES)} capabilities are missing here; these tests will skip:"
    ]
    for cap, problem in missing:
        lines.append(f"  - {cap.needed_by}: {problem}")
        lines.append(f"      fix: {fix_of(cap)}")
    return "\n".join(lines), len(missing)


def _runs(argv: list[str], what: str) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{what} ({e})"
    if result.returncode == 0:
        return None
    detail = (result.stderr or result.stdout).strip().splitlines()
    return f"{what} ({detail[-1][:160]})" if detail else what


@cache
def _makefile() -> str:
    try:
        return (ROOT / "Makefile").read_text()
    except OSError:
        return ""


def main() -> int:
    text, _ = summary()
    print(text, flush=True)
    return 0  # informational: the suite runs what it can


if __name__ == "__main__":
    sys.exit(main())
