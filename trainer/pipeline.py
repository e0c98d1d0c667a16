"""`chatforge pipeline`: tokenizer → base → mid → sft → eval → report card.

Each stage reads the previous one's artifacts by name; finished stages are skipped unless asked to
redo them, unfinished ones resume. Then every stage's final checkpoint is evaluated once (bits per
byte on the corpus's validation shards; the chat evals for chat stages, with whatever evaluation
data is installed, and the spelling task, which needs none) and the run's report card is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatforge.artifacts import ArtifactStore
from chatforge.contracts.training import Preset

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
    evaluate_stages(recipe, redone={cfg.stage for cfg in todo}, log=log)
    from .report import write_report

    report = write_report(first.run, artifacts_dir=first.artifacts_dir, corpus_dir=first.corpus_dir)
    log(f"[{first.run}] report card: {report}")
    log(
        f"[{first.run}] pipeline {recipe.name} done in {time.perf_counter() - t0:.0f}s; artifacts in {first.artifacts_dir}"
    )
    return results


def evaluate_stages(
    recipe: Preset, *, redone: Collection[str] = frozenset(), log: Callable[[str], None] = print
) -> None:
    """Evaluate each stage's final checkpoint, unless it was measured already and not retrained."""
    from .eval.stage import EvalConfig, result_path, run_eval, summary_line

    for cfg in recipe.stages:
        store = ArtifactStore(Path(cfg.artifacts_dir))
        name = f"{cfg.run}/{cfg.stage}"
        if result_path(store.resolve_checkpoint(name)).exists() and cfg.stage not in redone:
            continue
        eval_data = Path(cfg.corpus_dir).parent / "eval" / "chat"  # written by `make evaldata`
        results = run_eval(
            EvalConfig(
                checkpoint=name,
                artifacts_dir=cfg.artifacts_dir,
                corpus_dir=cfg.corpus_dir,
                bpb_docs=recipe.eval_docs,
                chat_data=str(eval_data) if eval_data.is_dir() else "",
                max_examples=recipe.eval_examples,
                job_id=cfg.job_id,
            )
        )
        log(summary_line(results))


def _maybe_ray(run_dir: Path, local: bool) -> Any:
    from contextlib import nullcontext

    return nullcontext() if local else ray_session(run_dir)
