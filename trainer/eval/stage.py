"""The eval stage: measure one checkpoint and store the results beside it.

`run_eval` loads a checkpoint (`run/stage[/step_N]`), then measures what applies: bits per byte on
the corpus's validation shards, CORE on a bundle (data-parallel over Ray workers when asked), and
the chat evals through the inference engine. The results go to `<stage>/step_N.eval.json`, beside
the checkpoint directory and never inside it (its meta.json hashes its files), and as an `eval`
event in the stage's log.jsonl and the job's Redis stream, where the report card finds them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatforge.artifacts import EVAL_RESULT_SUFFIX, ArtifactStore, eval_result_path

log = logging.getLogger(__name__)
CHAT_STAGES = ("mid", "sft", "rl")  # stages whose model speaks the chat format


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str  # `run/stage` (its latest step) or `run/stage/step_NNNNNN`
    artifacts_dir: str
    corpus_dir: str = "data/corpus"  # bits per byte on its validation shards ("" to skip)
    bpb_docs: int = 200
    core_bundle: str = ""  # a DCLM-layout bundle ("" to skip CORE)
    core_tasks: tuple[str, ...] = ()  # labels; empty = every task of the bundle
    chat_data: str = ""  # folder of <task>.jsonl written by `chatforge eval data`, or "hub"
    chat_tasks: tuple[str, ...] = ()  # empty = those with data, plus spelling; chat stages only
    max_examples: int = 0  # per task; 0 = all
    batch_rows: int = 32
    workers: int = 1  # Ray workers for CORE (data-parallel); 1 = in this process
    use_gpu: bool = False  # one GPU per Ray worker (the driver itself may have none)
    tools: str = "local"  # python tool for generative evals: local, a sandbox URL, or none
    job_id: str = ""


def result_path(checkpoint_dir: Path) -> Path:
    """Beside the checkpoint: the artifact store's layout (chatforge.artifacts) says where."""
    return eval_result_path(checkpoint_dir)


def read_results(stage_dir: Path) -> list[dict[str, Any]]:
    """Every stored eval result of a stage, by step."""
    found = []
    for p in sorted(stage_dir.glob(f"step_*{EVAL_RESULT_SUFFIX}")):
        try:
            found.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("skipping unreadable eval result %s: %s", p, e)
    return sorted(found, key=lambda r: r.get("step", 0))


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate the checkpoint; returns the results (also written beside it)."""
    from inference_svc.driver import EngineDriver

    from chatforge.contracts.events import ChatSummary, EvalEvent
    from chatforge.loading import load_model
    from chatforge.tools import tool_executor_from

    from ..telemetry import LOG_FILE, Telemetry, progress_bar
    from .chat_eval import CHAT_TASKS, chatcore, evaluate_chat_task, load_chat_tasks
    from .core import core_score

    loaded = load_model(cfg.checkpoint, ArtifactStore(Path(cfg.artifacts_dir)))
    model, tokenizer, meta, path = loaded.model, loaded.tokenizer, loaded.meta, loaded.path
    assert tokenizer is not None  # load_model insists on one by default
    stage = meta.get("stage") or path.parent.name
    limit = cfg.max_examples or None
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "checkpoint": f"{path.parent.parent.name}/{path.parent.name}/{path.name}",
        "stage": stage, "step": int(meta["step"]), "time": time.time(), "params": model.num_params(),
    }  # fmt: skip
    label = f"[{cfg.checkpoint}] eval"
    if cfg.corpus_dir:
        results["bpb"] = corpus_bpb(
            model, tokenizer, cfg.corpus_dir, cfg.bpb_docs, cfg.batch_rows, label=label
        )
    if cfg.core_bundle:
        from .core_data import load_bundle

        tasks = load_bundle(cfg.core_bundle, cfg.core_tasks or None)
        if cfg.workers > 1:
            core = evaluate_core_on_ray(
                path, tokenizer, tasks, cfg.workers, cfg.batch_rows, limit, use_gpu=cfg.use_gpu
            )
        else:
            from .core import evaluate_task

            core = []
            sizes = [len(t.items) if limit is None else min(limit, len(t.items)) for t in tasks]
            # Counted in examples, not tasks: CORE's tasks range from a hundred to ten thousand
            # examples, so a bar of tasks would give no useful rate or ETA.
            with progress_bar(desc=f"{label} CORE", total=sum(sizes), unit="example") as bar:
                for t, size in zip(tasks, sizes, strict=True):
                    bar.set_postfix(task=t.label, refresh=False)
                    core.append(
                        evaluate_task(model, tokenizer, t, batch_rows=cfg.batch_rows, max_examples=limit)
                    )
                    bar.update(size)
        results["core"] = {"score": core_score(core), "tasks": {r.label: r.to_dict() for r in core}}
    names = list(cfg.chat_tasks)
    if not names and stage in CHAT_STAGES:
        if cfg.chat_data == "hub":
            have = set(CHAT_TASKS)
        else:
            have = {p.stem for p in Path(cfg.chat_data).glob("*.jsonl")} if cfg.chat_data else set()
        names = [n for n in CHAT_TASKS if n in have or n == "spelling"]
        if cfg.tools == "none" and "humaneval" in names:
            names.remove("humaneval")
    if names:
        executor = tool_executor_from(cfg.tools)
        tasks_chat = load_chat_tasks(names, data_dir=cfg.chat_data or None, executor=executor)
        generator = EngineDriver.for_model(model, tokenizer, tool_executor=executor)
        try:
            chat = []
            sizes = [len(c.rows) if limit is None else min(limit, len(c.rows)) for c in tasks_chat]
            with progress_bar(desc=f"{label} chat", total=sum(sizes), unit="example") as bar:
                for chat_task, size in zip(tasks_chat, sizes, strict=True):
                    bar.set_postfix(task=chat_task.name, refresh=False)
                    chat.append(evaluate_chat_task(model, tokenizer, chat_task, generator=generator,
                                                   batch_rows=cfg.batch_rows, max_examples=limit))  # fmt: skip
                    bar.update(size)
        finally:
            generator.close()
        results["chat"] = {
            "chatcore": chatcore(chat),
            "tasks": {r.name: r.to_dict() for r in chat},
            "samples": {r.name: r.samples for r in chat},
        }
    results["duration_s"] = time.perf_counter() - t0
    out = result_path(path)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, out)
    telemetry = Telemetry(stage=stage, run=path.parent.parent.name, log_path=path.parent / LOG_FILE,
                          total_steps=0, enabled=True, job_id=cfg.job_id, console=False)  # fmt: skip
    scores = results.get("chat")  # the event carries the scores; the samples stay in the results file
    chat_scores = ChatSummary(chatcore=scores["chatcore"], tasks=scores["tasks"]) if scores else None
    telemetry.emit(EvalEvent(line=summary_line(results), checkpoint=results["checkpoint"], step=results["step"],
                             params=results["params"], bpb=results.get("bpb"), core=results.get("core"),
                             chat=chat_scores, duration_s=results["duration_s"]))  # fmt: skip
    telemetry.close()
    return results


def summary_line(results: dict[str, Any]) -> str:
    parts = [f"[{results['checkpoint']}] eval"]
    if "bpb" in results:
        parts.append(f"bpb {results['bpb']:.4f}")
    if "core" in results:
        parts.append(f"CORE {results['core']['score']:.4f}")
    if "chat" in results:
        tasks = results["chat"]["tasks"]
        parts += [f"{n} {t['accuracy']:.3f}" for n, t in tasks.items()]
        parts.append(f"ChatCORE {results['chat']['chatcore']:.4f}")
    return " | ".join(parts)


def corpus_bpb(
    model: Any, tokenizer: Any, corpus_dir: str, docs: int, batch_rows: int, *, label: str = "eval"
) -> float:
    """Bits per byte on the first `docs` documents of the corpus's validation shards."""
    from itertools import islice

    from chatforge.corpus import iter_texts, val_shards

    from ..telemetry import progress_bar
    from .bpb import bits_per_byte, text_batches

    shards = val_shards(corpus_dir)
    if not shards:
        raise FileNotFoundError(
            f"no validation shards (val_*.parquet) in {corpus_dir}: build it with `chatforge data corpus`"
        )
    texts = list(islice(iter_texts(shards), docs))
    batches = text_batches(tokenizer.encode_batch(texts), bos_id=tokenizer.bos_id,
                           sequence_len=model.config.sequence_len, batch_rows=batch_rows)  # fmt: skip
    with progress_bar(batches, desc=f"{label} bpb", unit="batch") as bar:
        return bits_per_byte(model, bar, tokenizer.token_bytes())


def evaluate_core_on_ray(
    path: Path, tokenizer: Any, tasks: list[Any], workers: int, batch_rows: int, limit: int | None,
    *, use_gpu: bool = False,
) -> list[Any]:  # fmt: skip
    """CORE data-parallel: worker r scores examples r, r+W, ... of every task; shares are merged.
    Ray must be running (the CLI starts a local one)."""
    import ray

    from .core import merge_results

    @ray.remote(num_cpus=1, num_gpus=1 if use_gpu else 0)
    def shard(rank: int) -> list[Any]:
        import torch

        from chatforge.loading import load_model

        from .core import evaluate_task

        torch.set_num_threads(1)
        model = load_model(path, tokenizer=tokenizer).model
        return [evaluate_task(model, tokenizer, t, batch_rows=batch_rows, max_examples=limit,
                              rank=rank, world_size=workers) for t in tasks]  # fmt: skip

    shares = ray.get([shard.remote(r) for r in range(workers)])
    return [merge_results(t, [s[i] for s in shares]) for i, t in enumerate(tasks)]
