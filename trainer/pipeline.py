"""`chatforge pipeline`: tokenizer → base → mid → sft, each stage reading the previous one's
artifacts by name, finished stages skipped unless asked to redo them, unfinished ones resumed."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatforge.artifacts import ArtifactStore

from .config import Preset
from .driver import ray_session, run_stage, stage_done
from .stages.tokenizer import train_tokenizer


def run_pipeline(
    recipe: Preset,
    *,
    redo: Collection[str] = frozenset(),
    local: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every stage of `recipe` in order; returns {stage: final metrics} of the stages that ran."""
    t0 = time.perf_counter()
    train_tokenizer(recipe.tokenizer, redo="tokenizer" in redo, log=log)
    results: dict[str, Any] = {}
    first = recipe.stages[0]
    todo = []
    for i, cfg in enumerate(recipe.stages):
        # redoing a stage invalidates everything trained from it
        if {"tokenizer", cfg.stage, *(s.stage for s in recipe.stages[:i])} & set(redo):
            todo.append(replace(cfg, resume=False))
        elif stage_done(cfg):
            log(f"[{cfg.run}/{cfg.stage}] finished earlier; skipping (pass --redo {cfg.stage} to retrain)")
        else:
            todo.append(cfg)  # new, or resumed from its latest checkpoint
    if todo:
        run_dir = ArtifactStore(Path(first.artifacts_dir)).run_dir(first.run)
        with _maybe_ray(run_dir, local):
            for cfg in todo:
                results[cfg.stage] = run_stage(cfg, launcher="local" if local else "ray")
    log(
        f"[{first.run}] pipeline {recipe.name} done in {time.perf_counter() - t0:.0f}s; artifacts in {first.artifacts_dir}"
    )
    return results


def _maybe_ray(run_dir: Path, local: bool) -> Any:
    from contextlib import nullcontext

    return nullcontext() if local else ray_session(run_dir)
