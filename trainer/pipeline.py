"""`chatforge pipeline`: tokenizer → base → mid → sft → rl → eval → report card.

Each stage reads the previous one's artifacts by name; finished stages are skipped unless asked to
redo them, unfinished ones resume (RL too: from its latest checkpoint). RL runs where the preset
says it pays (`Preset.with_rl`: d12 and up), or when `--rl` asks; otherwise the pipeline says why
it skipped it. Then every stage's final checkpoint is evaluated once: bits per byte on the corpus's
validation shards, CORE on the real bundle when `make evaldata` has written it (`data/eval/core`
beside the corpus), the chat evals for chat stages with whatever evaluation data is installed and
the spelling task, which needs none. Last, the run's report card is written.

Each stage's wall time and headline result are recorded in `<run>/pipeline.json` (kept across
runs: a stage skipped as finished keeps the time and result of the run that trained it), which the
report card shows as its first table.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.training import RL_STAGE, Preset, RLConfig

from .driver import ray_session, run_stage, stage_done
from .stages.tokenizer import train_tokenizer

PIPELINE_FILE = "pipeline.json"  # in the run directory: each stage's status, wall time and result


def run_pipeline(
    recipe: Preset,
    *,
    redo: Collection[str] = frozenset(),
    local: bool = False,
    log: Callable[[str], None] = print,
    rates: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Run every stage of `recipe` in order; returns {stage: final metrics} of the stages that ran.
    `rates` (dollars per device-hour by device type) price the report card's cost."""
    t0 = time.perf_counter()
    first = recipe.stages[0]
    store = ArtifactStore(Path(first.artifacts_dir))
    record = PipelineRecord(store.run_dir(first.run), recipe.name)
    if any(cfg.identity for cfg in recipe.stages):
        from .identity import load_identity

        for file in {cfg.identity for cfg in recipe.stages if cfg.identity}:
            load_identity(file)  # a bad identity file fails here, before any training
    redo = set(redo)

    start = time.perf_counter()
    existed = store.tokenizer_path(recipe.tokenizer.name).is_file() and "tokenizer" not in redo
    tokenizer = train_tokenizer(recipe.tokenizer, redo="tokenizer" in redo, log=log)
    record.stage("tokenizer", time.perf_counter() - start, _tokenizer_result(tokenizer), ran=not existed)

    results: dict[str, Any] = {}
    todo = []
    for i, cfg in enumerate(recipe.stages):
        # redoing a stage invalidates everything trained from it
        if {"tokenizer", cfg.stage, *(s.stage for s in recipe.stages[:i])} & redo:
            todo.append(replace(cfg, resume=False))
        elif stage_done(cfg):
            log(f"[{cfg.run}/{cfg.stage}] finished earlier; skipping (pass --redo {cfg.stage} to retrain)")
            record.keep(cfg.stage)
        else:
            todo.append(cfg)  # new, or resumed from its latest checkpoint
    rl, rl_status, rl_line = _rl_todo(recipe, redo, todo)
    if todo or rl is not None:
        with _maybe_ray(store.run_dir(first.run), local):
            for cfg in todo:
                start = time.perf_counter()
                results[cfg.stage] = run_stage(cfg, launcher="local" if local else "ray")
                record.stage(cfg.stage, time.perf_counter() - start, _train_result(results[cfg.stage]))
            if rl is not None:
                start = time.perf_counter()
                results[RL_STAGE] = _run_rl(rl, local=local)
                record.stage(RL_STAGE, time.perf_counter() - start, _rl_result(results[RL_STAGE]))
    if rl is None:  # said after the stages before it, in the order they run
        log(rl_line)
        if rl_status == "off":
            record.skip(RL_STAGE, rl_line.split("] ", 1)[1])
        else:
            record.keep(RL_STAGE)
    redone = {cfg.stage for cfg in todo} | ({RL_STAGE} if rl is not None else set())

    start = time.perf_counter()
    lines = evaluate_stages(recipe, redone=redone, log=log)
    record.stage("eval", time.perf_counter() - start, "; ".join(lines) or "every stage measured earlier")

    from .report import write_report

    start = time.perf_counter()
    report = write_report(
        first.run, artifacts_dir=first.artifacts_dir, corpus_dir=first.corpus_dir, rates=rates
    )
    record.stage("report", time.perf_counter() - start, str(report))
    log(f"[{first.run}] report card: {report}")
    log(
        f"[{first.run}] pipeline {recipe.name} done in {time.perf_counter() - t0:.0f}s; artifacts in {first.artifacts_dir}"
    )
    return results


def evaluate_stages(
    recipe: Preset, *, redone: Collection[str] = frozenset(), log: Callable[[str], None] = print
) -> list[str]:
    """Evaluate each stage's final checkpoint (RL's when it has one), unless it was measured
    already and not retrained; returns the summary line of each evaluation."""
    from .eval.stage import EvalConfig, result_path, run_eval, summary_line

    first = recipe.stages[0]
    store = ArtifactStore(Path(first.artifacts_dir))
    stages = [cfg.stage for cfg in recipe.stages]
    if ckpt.latest(store.stage_dir(first.run, RL_STAGE)) is not None:
        stages.append(RL_STAGE)
    eval_dir = Path(first.corpus_dir).parent / "eval"  # written by `make evaldata`
    core = eval_dir / "core"
    lines = []
    for stage in stages:
        name = f"{first.run}/{stage}"
        if result_path(store.resolve_checkpoint(name)).exists() and stage not in redone:
            continue
        results = run_eval(
            EvalConfig(
                checkpoint=name,
                artifacts_dir=first.artifacts_dir,
                corpus_dir=first.corpus_dir,
                bpb_docs=recipe.eval_docs,
                core_bundle=str(core) if stage == "base" and _has_bundle(core) else "",
                chat_data=str(eval_dir / "chat") if (eval_dir / "chat").is_dir() else "",
                max_examples=recipe.eval_examples,
                job_id=first.job_id,
            )
        )
        lines.append(summary_line(results))
        log(lines[-1])
    return lines


class PipelineRecord:
    """`<run>/pipeline.json`: each stage's status, wall time and headline result, in order."""

    def __init__(self, run_dir: Path, preset: str):
        self.path = run_dir / PIPELINE_FILE
        try:
            previous = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        self.previous = {s["stage"]: s for s in previous.get("stages", []) if isinstance(s, dict)}
        self.data: dict[str, Any] = {"preset": preset, "started": time.time(), "stages": []}

    def stage(self, stage: str, seconds: float, result: str, *, ran: bool = True) -> None:
        if not ran:
            self.keep(stage)
            return
        self._put({"stage": stage, "status": "ran", "seconds": round(seconds, 2), "result": result})

    def keep(self, stage: str) -> None:
        """A stage finished by an earlier run: its time and result as that run recorded them."""
        before = self.previous.get(stage, {})
        self._put({"stage": stage, "status": "finished earlier", "seconds": before.get("seconds"),
                   "result": before.get("result", "")})  # fmt: skip

    def skip(self, stage: str, reason: str) -> None:
        self._put({"stage": stage, "status": "skipped", "seconds": None, "result": reason})

    def _put(self, entry: dict[str, Any]) -> None:
        stages = [s for s in self.data["stages"] if s["stage"] != entry["stage"]]
        self.data["stages"] = [*stages, entry]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def read_pipeline(run_dir: Path) -> dict[str, Any]:
    """The run's pipeline record, or {} when the run was not made by `chatforge pipeline`."""
    try:
        data = json.loads((run_dir / PIPELINE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- helpers ----------------------------------------------------------------------------------------


def _rl_todo(recipe: Preset, redo: set[str], todo: list[Any]) -> tuple[RLConfig | None, str, str]:
    """(the RL stage's config when it is to run now, else None; "off" or "finished" when not;
    the line that says why)."""
    first = recipe.stages[0]
    if recipe.rl is None:
        return None, "off", f"[{first.run}/rl] RL skipped: preset {recipe.name} has no RL recipe"
    if not recipe.with_rl:
        reason = recipe.rl_note or f"RL skipped: it is off for preset {recipe.name} (pass --rl to run it)"
        return None, "off", f"[{first.run}/rl] {reason}"
    rl = recipe.rl
    if redo & {"tokenizer", "rl", *(s.stage for s in recipe.stages)} or todo:
        return replace(rl, resume=False), "", ""  # trained from a new SFT model
    latest = ckpt.latest(ArtifactStore(Path(rl.artifacts_dir)).stage_dir(rl.run, RL_STAGE))
    if latest is not None and int(ckpt.read_meta(latest)["step"]) >= rl.num_steps:
        return None, "finished", f"[{rl.run}/rl] finished earlier; skipping (pass --redo rl to retrain)"
    return rl, "", ""  # new, or resumed from its latest checkpoint


def _run_rl(rl: RLConfig, *, local: bool) -> dict[str, Any]:
    from .rl import prepare_stage, rl_worker, run_rl

    if local:
        prepare_stage(rl)
        return rl_worker(replace(rl, workers=1).to_dict())
    return run_rl(rl)


def _tokenizer_result(path: Path) -> str:
    from chatforge.tokenizer import Tokenizer

    return f"vocabulary {Tokenizer.load(path).vocab_size:,}"


def _train_result(metrics: dict[str, Any]) -> str:
    parts = []
    if isinstance(metrics.get("train_loss"), int | float):
        parts.append(f"loss {metrics['train_loss']:.4f}")
    if isinstance(metrics.get("val_bpb"), int | float):
        parts.append(f"val bpb {metrics['val_bpb']:.4f}")
    return ", ".join(parts)


def _rl_result(metrics: dict[str, Any]) -> str:
    parts = []
    if isinstance(metrics.get("pass_at_k"), int | float):
        parts.append(f"pass@{int(metrics.get('pass_k', 1))} {metrics['pass_at_k']:.3f}")
    if isinstance(metrics.get("mean_reward"), int | float):
        parts.append(f"mean reward {metrics['mean_reward']:.3f}")
    return ", ".join(parts)


def _has_bundle(core: Path) -> bool:
    return core.is_dir() and any(core.iterdir())


def _maybe_ray(run_dir: Path, local: bool) -> Any:
    from contextlib import nullcontext

    return nullcontext() if local else ray_session(run_dir)
