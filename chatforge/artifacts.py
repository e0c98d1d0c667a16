"""The artifact store: where tokenizers, checkpoints, eval results and report cards live.

One layout, whatever backs it (a local directory on a laptop, a PersistentVolume mounted at the
same path on a cluster):

    <root>/tokenizers/<name>/tokenizer.json
    <root>/runs/<run>/<stage>/step_000123/      (model.safetensors, optimizer.pt, meta.json)
    <root>/runs/<run>/<stage>/step_000123.eval.json   (that checkpoint's eval results)
    <root>/runs/<run>/<stage>/log.jsonl         (the stage's events: chatforge.contracts.events)
    <root>/runs/<run>/report/                   (report.md and its PNG plots)

A checkpoint is named `<run>/<stage>` (its latest complete step) or `<run>/<stage>/step_000123`.
Torch-free: the gateway lists checkpoints without PyTorch installed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = "artifacts"
STAGES: tuple[str, ...] = ("base", "mid", "sft", "rl")
# Beside the checkpoint directory, never inside it: its meta.json hashes the files it holds.
EVAL_RESULT_SUFFIX = ".eval.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def eval_result_path(checkpoint_dir: Path) -> Path:
    """Where a checkpoint's eval results are stored (written by the eval stage)."""
    return checkpoint_dir.parent / f"{checkpoint_dir.name}{EVAL_RESULT_SUFFIX}"


class ArtifactError(LookupError):
    """An artifact name that is malformed or names nothing."""


def check_name(kind: str, name: str) -> str:
    """Names become path components: refuse anything that could escape the store."""
    if not _NAME.match(name or ""):
        raise ArtifactError(
            f"invalid {kind} name {name!r}: use letters, digits, '.', '_' or '-' (at most 128, not starting with '.')"
        )
    return name


def shared_mode(base: int) -> int:
    """`base` (0o666 for a file, 0o777 for a directory) less the process's umask: the mode an
    ordinary create would give. Atomic writes start from tempfile's private 0600/0700, which other
    users of a shared store cannot read (compose's services and the chart's pods run as different
    uids: the gateway and the tokenizer service read what training jobs write)."""
    return base & ~_umask()


def _umask() -> int:
    # Linux says it without changing it; setting and restoring it races with other threads' creates.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> ArtifactStore:
        return cls(Path(root or os.environ.get("CHATFORGE_ARTIFACTS", DEFAULT_ROOT)).absolute())

    # tokenizers -------------------------------------------------------------------------------
    def tokenizer_path(self, name: str) -> Path:
        return self.root / "tokenizers" / check_name("tokenizer", name) / "tokenizer.json"

    def tokenizers(self) -> list[str]:
        base = self.root / "tokenizers"
        return sorted(p.parent.name for p in base.glob("*/tokenizer.json")) if base.is_dir() else []

    def find_tokenizer(self, name: str) -> Path:
        path = self.tokenizer_path(name)
        if not path.is_file():
            known = ", ".join(self.tokenizers()) or "none"
            raise ArtifactError(f"no tokenizer named {name!r} in {self.root} (known: {known})")
        return path

    # runs and checkpoints ---------------------------------------------------------------------
    def run_dir(self, run: str) -> Path:
        return self.root / "runs" / check_name("run", run)

    def stage_dir(self, run: str, stage: str) -> Path:
        return self.run_dir(run) / check_name("stage", stage)

    def runs(self) -> list[str]:
        base = self.root / "runs"
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def resolve_checkpoint(self, name: str) -> Path:
        """`run/stage` → its latest complete step; `run/stage/step_N` → that step."""
        from chatforge.checkpoint import latest

        parts = name.strip("/").split("/")
        if len(parts) not in (2, 3):
            raise ArtifactError(f"checkpoint name {name!r} must be 'run/stage' or 'run/stage/step_NNNNNN'")
        stage_dir = self.stage_dir(parts[0], parts[1])
        if len(parts) == 3:
            path = stage_dir / check_name("step", parts[2])
            if not (path / "meta.json").is_file():
                raise ArtifactError(f"no complete checkpoint {name!r} in {self.root}")
            return path
        newest = latest(stage_dir)
        if newest is None:
            raise ArtifactError(f"no complete checkpoint for {name!r} in {self.root}")
        return newest

    def checkpoints(self) -> list[tuple[str, Path]]:
        """Every complete checkpoint as (name, path), newest step last within a stage."""
        from chatforge.checkpoint import list_checkpoints

        found: list[tuple[str, Path]] = []
        for run in self.runs():
            for stage_dir in sorted(p for p in self.run_dir(run).iterdir() if p.is_dir()):
                for path in list_checkpoints(stage_dir):
                    found.append((f"{run}/{stage_dir.name}/{path.name}", path))
        return found
