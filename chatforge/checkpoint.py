"""Checkpoints: one directory per step, written whole or not at all.

    <stage_dir>/step_000123/
        model.safetensors   the weights
        optimizer.pt        optimizer state (torch.save), absent for weights-only exports
        meta.json           written last: config, step, data position, metrics, code version,
                            and the size and sha256 of every other file

A checkpoint is assembled in a hidden temporary directory beside its final place and renamed into
place in one `os.replace`, so a crash leaves either no `step_N` or a complete one; `latest()` also
ignores any directory without a `meta.json`. Loading checks the files against the sizes and hashes
in `meta.json` and says which file is wrong and how.

Importing this module does not import torch (the gateway lists checkpoints without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatforge.artifacts import shared_mode

FORMAT = "chatforge.checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "meta.json"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupted or does not match what loads it."""


@dataclass
class Checkpoint:
    """What `load` returns: the weights, the optimizer state (or None), and the metadata."""

    path: Path
    step: int
    model_state: dict[str, Any]
    optimizer_state: Any | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return self.meta.get("config", {})

    @property
    def data_position(self) -> Any:
        return self.meta.get("data_position")


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def save(
    stage_dir: str | os.PathLike[str],
    step: int,
    model_state: dict[str, Any],
    *,
    optimizer_state: Any | None = None,
    config: dict[str, Any] | None = None,
    data_position: Any = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `<stage_dir>/step_<step>` atomically and return its path; an existing step is replaced."""
    import torch
    from safetensors.torch import save_file

    if step < 0:
        raise CheckpointError(f"step must be >= 0, got {step}")
    stage = Path(stage_dir)
    stage.mkdir(parents=True, exist_ok=True)
    final = stage / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=stage))
    tmp.chmod(shared_mode(0o777))  # readable by the store's other users (mkdtemp's 0700 is private)
    try:
        # safetensors refuses shared or non-contiguous storage; a clean contiguous CPU copy is cheap.
        weights = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
        save_file(weights, str(tmp / MODEL_FILE))
        files = [MODEL_FILE]
        if optimizer_state is not None:
            torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
            files.append(OPTIMIZER_FILE)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "step": step,
            "config": config or {},
            "data_position": data_position,
            "metrics": metrics or {},
            "code_version": code_version(),
            "saved_at": time.time(),
            "files": {name: _file_info(tmp / name) for name in files},
            **(extra or {}),
        }
        _write_json(tmp / META_FILE, meta)
        for name in (*files, META_FILE):  # safetensors writes 0600: as readable as a plain create
            (tmp / name).chmod(shared_mode(0o666))
        _fsync_dir(tmp)
        if final.exists():  # re-saving a step (a resumed run reaching it again): swap, never merge
            old = stage / f".{final.name}.old-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(stage)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load(
    path: str | os.PathLike[str],
    *,
    with_optimizer: bool = True,
    verify: bool = True,
    map_location: str = "cpu",
) -> Checkpoint:
    """Read a checkpoint directory; CheckpointError names the file and the problem when it is bad."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_meta(path)
    files = meta.get("files", {})
    if MODEL_FILE not in files:
        raise CheckpointError(f"{path / META_FILE} lists no {MODEL_FILE}")
    names = [MODEL_FILE] + ([OPTIMIZER_FILE] if with_optimizer and OPTIMIZER_FILE in files else [])
    for name in names:
        _check_file(path / name, files[name], hash_it=verify)
    try:
        model_state = load_file(str(path / MODEL_FILE), device=map_location)
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path / MODEL_FILE} cannot be read as safetensors: {e}") from None
    optimizer_state = None
    if OPTIMIZER_FILE in names:
        try:
            optimizer_state = torch.load(path / OPTIMIZER_FILE, map_location=map_location, weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path / OPTIMIZER_FILE} cannot be read: {e}") from None
    return Checkpoint(path, int(meta["step"]), model_state, optimizer_state, meta)


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a checkpoint directory, checked for format and version."""
    path = Path(path)
    meta_path = path / META_FILE
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path} is missing: {path} is not a complete checkpoint")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is unreadable or not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a {FORMAT} metadata file")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path} has format version {meta.get('version')!r}; this code reads {FORMAT_VERSION}"
        )
    return meta


def load_state_into(
    module: Any, state: dict[str, Any], *, source: str | os.PathLike[str] = "checkpoint"
) -> None:
    """`module.load_state_dict(state)` with a message that lists what does not match."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise CheckpointError(f"{source}/{MODEL_FILE} does not fit the model: " + ", ".join(parts))
    module.load_state_dict(state)


def list_checkpoints(stage_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete step directories (those with a meta.json), oldest step first."""
    stage = Path(stage_dir)
    if not stage.is_dir():
        return []
    found = []
    for p in stage.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest(stage_dir: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint of a stage, or None; half-written directories are ignored."""
    found = list_checkpoints(stage_dir)
    return found[-1] if found else None


def prune(stage_dir: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (and stale temp dirs); returns what went."""
    stage = Path(stage_dir)
    removed = list_checkpoints(stage)[: -keep or None] if keep > 0 else []
    removed += [
        p for p in stage.glob(".step_*.tmp-*") if p.is_dir() and time.time() - p.stat().st_mtime > 3600
    ]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


def code_version() -> str:
    """The git commit of the running code (with '-dirty' when modified), or the package version."""
    from chatforge import __version__

    here = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
        return f"{__version__}+g{commit}{'-dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


# --- helpers ----------------------------------------------------------------------------------


def _file_info(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _check_file(path: Path, info: dict[str, Any], *, hash_it: bool) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (listed in {META_FILE})")
    size = path.stat().st_size
    if size != info.get("bytes"):
        raise CheckpointError(
            f"{path} is {size} bytes but {META_FILE} says {info.get('bytes')}: truncated or replaced"
        )
    if hash_it and _sha256(path) != info.get("sha256"):
        raise CheckpointError(f"{path} does not match the sha256 in {META_FILE}: the file is corrupted")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, default=str)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
