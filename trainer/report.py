"""The report card: one Markdown page (and its PNG plots) about a whole run.

`write_report(run)` reads what the stages left in the artifact store, never anything else: each
stage's latest checkpoint metadata (its config, steps, metrics), its `log.jsonl` (the loss curve,
learning rate, throughput, MFU, validation bits per byte, RL rewards and pass@k), and the eval
results stored beside its checkpoints (`step_N.eval.json`: bpb, CORE per task, chat evals and
ChatCORE). It writes `<run>/report/report.md` (and its numbers as report.json) with the environment, a section per stage, a summary
table across stages and a cost estimate at `dollars_per_hour`, plus loss.png, bpb.png, lr.png,
throughput.png, rl.png and evals.png (a plot only when there is data to draw).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.events import (
    EvalEvent,
    Event,
    JobStateEvent,
    ProgressEvent,
    RawEvent,
    RLEvalEvent,
    RLStepEvent,
    StartEvent,
    ValidationEvent,
)

REPORT_STAGES: tuple[str, ...] = ("base", "mid", "sft", "rl")
# A node of 8 H100s rents for about $24/hour (2025-26 on-demand list prices, ~$3 per GPU-hour).
DEFAULT_DOLLARS_PER_HOUR = 24.0


@dataclass
class StageSummary:
    stage: str
    checkpoint: str = ""
    step: int = 0
    num_steps: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    params: int = 0
    flops_per_token: float = 0.0
    tokens: int = 0
    duration_s: float = 0.0
    mfu: float | None = None
    tokens_per_s: float | None = None
    final_loss: float | None = None
    val_bpb: float | None = None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latest_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}


def write_report(
    run: str, *, artifacts_dir: str | Path, dollars_per_hour: float = DEFAULT_DOLLARS_PER_HOUR,
    corpus_dir: str = "",
) -> Path:  # fmt: skip
    """Write the run's report card; returns the path of report.md."""
    store = ArtifactStore(Path(artifacts_dir).absolute())
    run_dir = store.run_dir(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run {run!r} in {store.root} (runs: {', '.join(store.runs()) or 'none'})")
    stages = [s for s in (summarize_stage(store, run, name) for name in REPORT_STAGES) if s is not None]
    if not stages:
        raise FileNotFoundError(f"run {run!r} has no stage with a checkpoint or a log yet")
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(stages, out)
    tokenizer = tokenizer_summary(store, stages, corpus_dir)
    env = environment()
    text = render_markdown(run, stages, plots, tokenizer, env, dollars_per_hour)
    _write(
        out / "report.json", json.dumps(summary_data(run, stages, tokenizer, env, dollars_per_hour), indent=1)
    )
    path = out / "report.md"
    _write(path, text)
    return path


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def summary_data(
    run: str,
    stages: Sequence[StageSummary],
    tokenizer: dict[str, Any],
    env: dict[str, str],
    dollars_per_hour: float,
) -> dict[str, Any]:
    """The report's numbers as JSON (report.json), for the web console's tables."""
    total_s = sum(s.duration_s for s in stages)
    rows = []
    for s in stages:
        e = s.latest_eval
        rows.append({
            "stage": s.stage, "checkpoint": s.checkpoint, "step": s.step, "params": s.params,
            "tokens": s.tokens, "duration_s": s.duration_s, "mfu": s.mfu, "final_loss": s.final_loss,
            "val_bpb": s.val_bpb, "eval_bpb": e.get("bpb"),
            "core": e.get("core", {}).get("score"), "core_tasks": e.get("core", {}).get("tasks", {}),
            "chatcore": e.get("chat", {}).get("chatcore"), "chat_tasks": e.get("chat", {}).get("tasks", {}),
            "rl_reward": s.curves.get("reward", []), "rl_pass_at_k": s.curves.get("pass_at_k", []),
        })  # fmt: skip
    return {
        "run": run, "environment": env, "tokenizer": tokenizer, "stages": rows, "total_duration_s": total_s,
        "dollars_per_hour": dollars_per_hour, "estimated_cost_dollars": total_s / 3600 * dollars_per_hour,
    }  # fmt: skip


# --- gathering --------------------------------------------------------------------------------------


def summarize_stage(store: ArtifactStore, run: str, stage: str) -> StageSummary | None:
    from .eval.stage import read_results
    from .telemetry import LOG_FILE, read_log

    stage_dir = store.stage_dir(run, stage)
    latest = ckpt.latest(stage_dir)
    events = read_log(stage_dir / LOG_FILE)
    if latest is None and not events:
        return None
    s = StageSummary(stage)
    if latest is not None:
        meta = ckpt.read_meta(latest)
        s.checkpoint = f"{run}/{stage}/{latest.name}"
        s.step, s.num_steps = int(meta["step"]), int(meta.get("num_steps", meta["step"]))
        train = meta.get("train_config") or meta.get("rl_config") or {}
        keys = ("depth", "sequence_len", "total_batch_tokens", "device_batch_rows", "workers", "task_source",
                "questions_per_step", "samples_per_question", "temperature", "lr_frac")  # fmt: skip
        s.settings = {k: train[k] for k in keys if k in train}
        s.params, s.flops_per_token = _model_size(meta.get("config", {}))
        s.tokens = s.step * int(train.get("total_batch_tokens", 0))
        metrics = meta.get("metrics", {})
        s.final_loss = _num(metrics.get("train_loss"))
        s.val_bpb = _num(metrics.get("val_bpb"))
    progress = [e for e in events if isinstance(e, ProgressEvent)]
    for key in ("loss", "lr", "tokens_per_s"):
        s.curves[key] = [(e.step, getattr(e, key)) for e in progress if math.isfinite(getattr(e, key))]
    s.curves["val_bpb"] = [(e.step, e.val_bpb) for e in events if isinstance(e, ValidationEvent)]
    s.curves["reward"] = [(e.step, e.mean_reward) for e in events if isinstance(e, RLStepEvent)]
    s.curves["pass_at_k"] = [(e.step, e.pass_at_k) for e in events if isinstance(e, RLEvalEvent)]
    mfus = [e.mfu for e in progress if e.mfu and math.isfinite(e.mfu)]
    s.mfu = sum(mfus) / len(mfus) if mfus else None
    tps = [v for _, v in s.curves["tokens_per_s"]]
    s.tokens_per_s = sum(tps) / len(tps) if tps else None
    s.duration_s = _active_seconds(events)
    if s.final_loss is None and s.curves["loss"]:
        s.final_loss = s.curves["loss"][-1][1]
    s.evals = read_results(stage_dir)
    if s.val_bpb is None and s.latest_eval.get("bpb") is not None:
        s.val_bpb = float(s.latest_eval["bpb"])
    return s


def _active_seconds(events: Sequence[Event | RawEvent]) -> float:
    """Wall time of the stage's runs: from each `start` event to the last event before the next
    start (so the gap between a crash and its resume is not counted)."""
    total, begin, last = 0.0, None, None
    for e in events:
        if isinstance(e, EvalEvent | JobStateEvent):  # an eval runs later, apart from training
            continue
        t = e.time
        if not t:
            continue
        if isinstance(e, StartEvent):
            if begin is not None and last is not None:
                total += last - begin
            begin = t
        last = t
    if begin is not None and last is not None:
        total += last - begin
    return total


def _model_size(config: dict[str, Any]) -> tuple[int, float]:
    if not config:
        return 0, 0.0
    import torch

    from chatforge.model import GPT, GPTConfig

    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = GPT(GPTConfig.from_dict(config))
    return model.num_params(), float(model.flops_per_token())


def tokenizer_summary(
    store: ArtifactStore, stages: Sequence[StageSummary], corpus_dir: str
) -> dict[str, Any]:
    """Vocabulary size and, given the corpus, compression (bytes per token) on validation text."""
    names: set[str] = set()
    for s in stages:
        if s.checkpoint:
            name = ckpt.read_meta(store.resolve_checkpoint(s.checkpoint)).get("tokenizer")
            if isinstance(name, str):
                names.add(name)
    if not names:
        return {}
    from chatforge.tokenizer import Tokenizer

    name = sorted(names)[0]
    try:
        tok = Tokenizer.load(store.find_tokenizer(name))
    except LookupError:
        return {"name": name}
    info: dict[str, Any] = {"name": name, "vocab_size": tok.vocab_size}
    if corpus_dir:
        from itertools import islice

        from chatforge.corpus import iter_texts, val_shards

        texts = list(islice(iter_texts(val_shards(corpus_dir)), 200))
        n_tokens = sum(len(ids) for ids in tok.encode_batch(texts))
        if n_tokens:
            info["bytes_per_token"] = sum(len(t.encode("utf-8")) for t in texts) / n_tokens
    return info


def environment() -> dict[str, str]:
    import torch

    from chatforge import __version__

    if torch.cuda.is_available():
        hardware = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        hardware = f"CPU: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "hardware": hardware,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "chatforge": __version__,
        "code version (git)": ckpt.code_version(),
    }


# --- plots ------------------------------------------------------------------------------------------


def write_plots(stages: Sequence[StageSummary], out: Path) -> dict[str, str]:
    """The PNGs that have data; returns {plot name: file name}."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    for key, title, ylabel in (
        ("loss", "Training loss", "loss (nats/token)"),
        ("val_bpb", "Validation bits per byte", "bits per byte"),
        ("lr", "Learning rate", "learning rate"),
        ("tokens_per_s", "Throughput", "tokens / s"),
    ):
        # RL's policy loss and sampled-token rate measure other things: RL has its own plot
        series = [(s.stage, s.curves.get(key, [])) for s in stages if s.curves.get(key) and s.stage != "rl"]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        offset = 0
        for stage, points in series:  # stages one after another on a shared step axis
            ax.plot(
                [offset + x for x, _ in points],
                [y for _, y in points],
                marker="." if len(points) < 30 else None,
                label=stage,
            )
            offset += points[-1][0]
        ax.set(title=title, xlabel="step (stages in sequence)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        name = {"val_bpb": "bpb", "tokens_per_s": "throughput"}.get(key, key) + ".png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        plots[key] = name
    rl = next((s for s in stages if s.stage == "rl"), None)
    if rl is not None and (rl.curves.get("reward") or rl.curves.get("pass_at_k")):
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, label in (("reward", "mean reward (train)"), ("pass_at_k", "pass@k (held out)")):
            points = rl.curves.get(key, [])
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=label)
        ax.set(title="RL progress", xlabel="RL step", ylabel="rate", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "rl.png", dpi=100)
        plt.close(fig)
        plots["rl"] = "rl.png"
    scores = _eval_scores(stages)
    if scores:
        metrics = sorted({m for per in scores.values() for m in per})
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metrics) + 2), 4))
        width = 0.8 / len(scores)
        for i, (stage, per) in enumerate(scores.items()):
            xs = [j + i * width for j in range(len(metrics))]
            values = [per.get(m, math.nan) for m in metrics]  # NaN: not measured at this stage, no bar
            bars = ax.bar(xs, values, width=width, label=stage)
            # a score of 0 has no visible bar, but still its number
            ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.2f}" for v in values], fontsize=8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, rotation=30, ha="right")
        ax.set(title="Eval scores by stage", ylabel="score")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "evals.png", dpi=100)
        plt.close(fig)
        plots["evals"] = "evals.png"
    return plots


def _eval_scores(stages: Sequence[StageSummary]) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, float]] = {}
    for s in stages:
        e = s.latest_eval
        per: dict[str, float] = {}
        if "core" in e:
            per["CORE"] = float(e["core"]["score"])
        if "chat" in e:
            per["ChatCORE"] = float(e["chat"]["chatcore"])
            per.update({name: float(t["accuracy"]) for name, t in e["chat"]["tasks"].items()})
        if per:
            scores[s.stage] = per
    return scores


# --- markdown -----------------------------------------------------------------------------------------


def render_markdown(
    run: str, stages: Sequence[StageSummary], plots: dict[str, str], tokenizer: dict[str, Any],
    env: dict[str, str], dollars_per_hour: float,
) -> str:  # fmt: skip
    lines = [f"# chatforge report card: run `{run}`", "", "## Environment", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items()]
    if tokenizer:
        lines += ["", "## Tokenizer", "", f"- name: `{tokenizer['name']}`"]
        if "vocab_size" in tokenizer:
            lines.append(f"- vocabulary: {tokenizer['vocab_size']:,} tokens")
        if "bytes_per_token" in tokenizer:
            lines.append(
                f"- compression: {tokenizer['bytes_per_token']:.2f} bytes per token on validation text"
            )
    for s in stages:
        lines += ["", f"## Stage `{s.stage}`", ""]
        if s.checkpoint:
            lines.append(f"- checkpoint: `{s.checkpoint}` (step {s.step} of {s.num_steps})")
        if s.settings:
            lines.append("- settings: " + ", ".join(f"{k} = {v}" for k, v in s.settings.items()))
        if s.params:
            lines.append(f"- parameters: {s.params:,}; training FLOPs per token: {s.flops_per_token:.3g}")
        if s.tokens:
            lines.append(f"- tokens: {s.tokens:,}; total FLOPs: {s.tokens * s.flops_per_token:.3g}")
        lines.append(f"- time: {_hms(s.duration_s)}")
        if s.tokens_per_s is not None:
            lines.append(
                f"- throughput: {s.tokens_per_s:,.0f} tokens/s"
                + (f"; MFU {100 * s.mfu:.2f}%" if s.mfu else "")
            )
        if s.final_loss is not None:
            lines.append(f"- final training loss: {s.final_loss:.4f}")
        if s.val_bpb is not None:
            lines.append(f"- validation bits per byte: {s.val_bpb:.4f}")
        if s.curves.get("reward"):
            first, last = s.curves["reward"][0][1], s.curves["reward"][-1][1]
            lines.append(f"- RL mean reward: {first:.3f} (first step) → {last:.3f} (last step)")
        if s.curves.get("pass_at_k"):
            lines.append(
                "- held-out pass@k by step: " + ", ".join(f"{x}: {y:.3f}" for x, y in s.curves["pass_at_k"])
            )
        e = s.latest_eval
        if "bpb" in e:
            lines.append(
                f"- eval bits per byte on the corpus's validation text: {e['bpb']:.4f} (`{e['checkpoint']}`)"
            )
        if "core" in e:
            lines += ["", f"CORE = **{e['core']['score']:.4f}** (`{e['checkpoint']}`)", "",
                      "| task | accuracy | centred | examples |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
            lines += [
                f"| {n} | {t['accuracy']:.4f} | {t['centered']:.4f} | {t['n']} |"
                for n, t in e["core"]["tasks"].items()
            ]
        if "chat" in e:
            lines += ["", f"ChatCORE = **{e['chat']['chatcore']:.4f}** (`{e['checkpoint']}`)", "",
                      "| task | accuracy | centred | examples |", "| --- | ---: | ---: | ---: |"]  # fmt: skip
            lines += [
                f"| {n} | {t['accuracy']:.4f} | {t['centered']:.4f} | {t['n']} |"
                for n, t in e["chat"]["tasks"].items()
            ]
    total_s = sum(s.duration_s for s in stages)
    lines += ["", "## Summary", "", "| stage | steps | tokens | time | loss | bpb | CORE | ChatCORE |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for s in stages:
        e = s.latest_eval
        lines.append(
            f"| {s.stage} | {s.step} | {s.tokens:,} | {_hms(s.duration_s)} | {_fmt(s.final_loss)} | {_fmt(s.val_bpb)} "
            f"| {_fmt(e.get('core', {}).get('score'))} | {_fmt(e.get('chat', {}).get('chatcore'))} |"
        )
    cost = total_s / 3600 * dollars_per_hour
    lines += [
        "",
        f"Total time {_hms(total_s)}; estimated cost **${cost:,.2f}** at ${dollars_per_hour:,.2f}/hour.",
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{key}]({name})" for key, name in plots.items()]
    return "\n".join(lines) + "\n"


def _fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4f}"


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
