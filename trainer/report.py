"""The report card: one Markdown page (and its PNG plots) about a whole run.

`write_report(run)` reads what the stages left in the artifact store, never anything else: each
stage's latest checkpoint metadata (its config, steps, metrics), its `log.jsonl` (the loss curve,
learning rate, throughput, MFU, validation bits per byte, RL rewards and pass@k), and the eval
results stored beside its checkpoints (`step_N.eval.json`: bpb, CORE per task, chat evals and
ChatCORE), and the pipeline's record of each stage's wall time and result (`pipeline.json`, when
`chatforge pipeline` made the run). It writes `<run>/report/report.md` (and its numbers as
report.json) with the environment, the pipeline, a section per stage, the scores of every stage
side by side, a summary table, the cost, and, for the d20 preset, nanochat's published d20 numbers
beside this run's; plus loss.png, bpb.png, lr.png, throughput.png, rl.png and evals.png (a plot
only when there is data to draw).

Honest numbers: MFU is against the peak the run recorded (a matmul probe on CPU, the data sheet on
a known GPU: `trainer.telemetry.device_peak`), and the cost applies a rate per device type to the
hardware each stage recorded: by default only an H100 has a rate, so a laptop's run has no cost
unless its owner sets one (`--rate cpu=0.05`).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
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
# Dollars per device-hour by device type (`Peak.kind`). A node of 8 H100s rents for about $24/hour
# (2025-26 on-demand list prices, ~$3 per GPU-hour); other devices have no default: their prices
# vary too much, and a CPU run on one's own machine costs nothing to rent.
DEFAULT_RATES: dict[str, float] = {"H100": 3.0}
# nanochat's published d20 run ("$100 tier", 8 x H100, 3h51m), from the report card in its
# README (github.com/karpathy/nanochat, October 2025): (metric, stage) -> value.
NANOCHAT_D20: dict[tuple[str, str], float] = {
    ("CORE", "base"): 0.2219,
    ("ARC-Challenge", "mid"): 0.2875, ("ARC-Challenge", "sft"): 0.2807,
    ("ARC-Easy", "mid"): 0.3561, ("ARC-Easy", "sft"): 0.3876,
    ("GSM8K", "mid"): 0.0250, ("GSM8K", "sft"): 0.0455, ("GSM8K", "rl"): 0.0758,
    ("HumanEval", "mid"): 0.0671, ("HumanEval", "sft"): 0.0854,
    ("MMLU", "mid"): 0.3111, ("MMLU", "sft"): 0.3151,
    ("ChatCORE", "mid"): 0.0730, ("ChatCORE", "sft"): 0.0884,
}  # fmt: skip
NANOCHAT_D20_SECONDS = 3 * 3600 + 51 * 60
# chatforge's chat task names as nanochat's report names them
METRIC_NAMES = {"arc_challenge": "ARC-Challenge", "arc_easy": "ARC-Easy", "gsm8k": "GSM8K",
                "humaneval": "HumanEval", "mmlu": "MMLU", "spelling": "Spelling"}  # fmt: skip


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
    # what the stage ran on (checkpoint meta): device, kind, devices, peak_flops_per_device, peak_source
    hardware: dict[str, Any] = field(default_factory=dict)

    @property
    def latest_eval(self) -> dict[str, Any]:
        return self.evals[-1] if self.evals else {}


def write_report(
    run: str, *, artifacts_dir: str | Path, dollars_per_hour: float | None = None,
    rates: Mapping[str, float] | None = None, corpus_dir: str = "",
) -> Path:  # fmt: skip
    """Write the run's report card; returns the path of report.md. The cost is at `rates` (dollars
    per device-hour by device type, over DEFAULT_RATES) or, when given, one `dollars_per_hour` for
    the whole run's hardware."""
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
    from .pipeline import read_pipeline

    pipeline = read_pipeline(run_dir)
    extra: dict[str, Any] = {"rates": rates, "pipeline": pipeline}
    text = render_markdown(run, stages, plots, tokenizer, env, dollars_per_hour, **extra)
    data = summary_data(run, stages, tokenizer, env, dollars_per_hour, **extra)
    _write(out / "report.json", json.dumps(data, indent=1))
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
    dollars_per_hour: float | None,
    *,
    rates: Mapping[str, float] | None = None,
    pipeline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's numbers as JSON (report.json), for the web console's tables."""
    total_s = sum(s.duration_s for s in stages)
    costs = [stage_cost(s, dollars_per_hour, rates) for s in stages]
    known = [c for c, _ in costs if c is not None]
    rows = []
    for s, (cost, basis) in zip(stages, costs, strict=True):
        e = s.latest_eval
        rows.append({
            "stage": s.stage, "checkpoint": s.checkpoint, "step": s.step, "params": s.params,
            "tokens": s.tokens, "duration_s": s.duration_s, "mfu": s.mfu, "final_loss": s.final_loss,
            "val_bpb": s.val_bpb, "eval_bpb": e.get("bpb"),
            "core": e.get("core", {}).get("score"), "core_tasks": e.get("core", {}).get("tasks", {}),
            "chatcore": e.get("chat", {}).get("chatcore"), "chat_tasks": e.get("chat", {}).get("tasks", {}),
            "rl_reward": s.curves.get("reward", []), "rl_pass_at_k": s.curves.get("pass_at_k", []),
            "hardware": s.hardware, "cost_dollars": cost, "cost_basis": basis,
        })  # fmt: skip
    data = {
        "run": run, "environment": env, "tokenizer": tokenizer, "stages": rows, "total_duration_s": total_s,
        "dollars_per_hour": dollars_per_hour, "rates": _rates(rates),
        # None when no stage has a rate: no cost is better than a made-up one
        "estimated_cost_dollars": sum(known) if known else None,
        "pipeline": pipeline or {},
    }  # fmt: skip
    if is_d20(stages, pipeline):
        data["nanochat_d20"] = [
            {"metric": m, "stage": st, "nanochat": ref, "this_run": ours}
            for m, st, ref, ours in nanochat_comparison(stages)
        ]
    return data


def stage_cost(
    s: StageSummary, dollars_per_hour: float | None, rates: Mapping[str, float] | None
) -> tuple[float | None, str]:
    """(dollars, how they were counted) for one stage's wall time; (None, why) when no rate applies."""
    hours = s.duration_s / 3600
    if dollars_per_hour is not None:
        return hours * dollars_per_hour, f"${dollars_per_hour:,.2f}/hour for the run's hardware"
    kind = str(s.hardware.get("kind", ""))
    if not kind:
        return None, "the stage did not record its hardware"
    rate = _rates(rates).get(kind.lower())
    if rate is None:
        return None, f"no rate for {kind}: pass --rate {'cpu' if kind == 'cpu' else kind}=<dollars per hour>"
    devices = 1 if kind == "cpu" else int(s.hardware.get("devices", 1))
    return hours * devices * rate, f"{devices} x {kind} at ${rate:,.2f}/device-hour"


def _rates(rates: Mapping[str, float] | None) -> dict[str, float]:
    """Dollars per device-hour by device type, in lower case (`--rate h100=2` is H100's rate)."""
    return {k.lower(): v for k, v in (*DEFAULT_RATES.items(), *(rates or {}).items())}


def is_d20(stages: Sequence[StageSummary], pipeline: dict[str, Any] | None) -> bool:
    """Whether the run is the d20 preset (its pipeline record says so, or its base model is 20 deep)."""
    if pipeline and pipeline.get("preset"):
        return pipeline["preset"] == "d20"
    return any(s.stage == "base" and s.settings.get("depth") == 20 for s in stages)


def nanochat_comparison(stages: Sequence[StageSummary]) -> list[tuple[str, str, float, float | None]]:
    """(metric, stage, nanochat's d20 value, this run's) for each number nanochat published."""
    ours = stage_scores(stages)
    return [(m, st, ref, ours.get(st, {}).get(m)) for (m, st), ref in NANOCHAT_D20.items()]


def stage_scores(stages: Sequence[StageSummary]) -> dict[str, dict[str, float]]:
    """{stage: {metric: score}} with nanochat's metric names: CORE, each chat task, ChatCORE."""
    out: dict[str, dict[str, float]] = {}
    for s in stages:
        e = s.latest_eval
        per: dict[str, float] = {}
        if "core" in e:
            per["CORE"] = float(e["core"]["score"])
        if "chat" in e:
            for name, t in e["chat"]["tasks"].items():
                per[METRIC_NAMES.get(name, name)] = float(t["accuracy"])
            per["ChatCORE"] = float(e["chat"]["chatcore"])
        out[s.stage] = per
    return out


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
        s.hardware = dict(meta.get("hardware") or {})
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
    env: dict[str, str], dollars_per_hour: float | None, *, rates: Mapping[str, float] | None = None,
    pipeline: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    lines = [f"# chatforge report card: run `{run}`", "", "## Environment", ""]
    lines += [f"- **{k}**: {v}" for k, v in env.items()]
    if pipeline and pipeline.get("stages"):
        lines += ["", "## Pipeline", "", f"Preset `{pipeline.get('preset', '?')}`; each stage's wall time "
                  "as the pipeline measured it (a stage finished by an earlier run keeps that run's numbers).",
                  "", "| stage | status | wall time | result |", "| --- | --- | ---: | --- |"]  # fmt: skip
        for p in pipeline["stages"]:
            seconds = p.get("seconds")
            wall = _hms(seconds) if isinstance(seconds, int | float) else "—"
            result = str(p.get("result") or "—").replace("|", "/").replace("\n", " ")
            lines.append(f"| {p.get('stage')} | {p.get('status')} | {wall} | {result} |")
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
                + (f" {_peak(s.hardware)}" if s.mfu and s.hardware.get("peak_flops_per_device") else "")
            )
        if s.hardware.get("device"):
            lines.append(f"- hardware: {s.hardware.get('devices', 1)} x {s.hardware['device']}")
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
    lines += ["", "## Summary", ""]
    scores = stage_scores(stages)
    metrics = list(dict.fromkeys(m for per in scores.values() for m in per))
    if metrics:  # nanochat's table: every score of every stage, side by side
        with_scores = [s.stage for s in stages]
        lines += ["### Scores by stage", "", "| metric | " + " | ".join(with_scores) + " |",
                  "| --- |" + " ---: |" * len(with_scores)]  # fmt: skip
        lines += [
            f"| {m} | " + " | ".join(_fmt(scores[st].get(m)) for st in with_scores) + " |" for m in metrics
        ]
        lines += ["", "### Stages", ""]
    lines += ["| stage | steps | tokens | time | loss | bpb | CORE | ChatCORE |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for s in stages:
        e = s.latest_eval
        lines.append(
            f"| {s.stage} | {s.step} | {s.tokens:,} | {_hms(s.duration_s)} | {_fmt(s.final_loss)} | {_fmt(s.val_bpb)} "
            f"| {_fmt(e.get('core', {}).get('score'))} | {_fmt(e.get('chat', {}).get('chatcore'))} |"
        )
    lines += ["", _cost_line(stages, total_s, dollars_per_hour, rates)]
    if is_d20(stages, pipeline):
        lines += ["", "## Compared with nanochat's d20", "",
                  "nanochat's published d20 run (its README's report card, October 2025: 8 x H100, "
                  f"{_hms(NANOCHAT_D20_SECONDS)} in all) beside this run's latest eval of each stage.", "",
                  "| metric | stage | nanochat d20 | this run | difference |", "| --- | --- | ---: | ---: | ---: |"]  # fmt: skip
        for metric, stage, ref, ours in nanochat_comparison(stages):
            diff = "—" if ours is None else f"{ours - ref:+.4f}"
            lines.append(f"| {metric} | {stage} | {ref:.4f} | {_fmt(ours)} | {diff} |")
        total = sum(s.duration_s for s in stages)
        lines.append(f"| time (training stages) | all | {_hms(NANOCHAT_D20_SECONDS)} | {_hms(total)} | — |")
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{key}]({name})" for key, name in plots.items()]
    return "\n".join(lines) + "\n"


def _cost_line(
    stages: Sequence[StageSummary], total_s: float, dollars_per_hour: float | None,
    rates: Mapping[str, float] | None,
) -> str:  # fmt: skip
    if dollars_per_hour is not None:
        cost = total_s / 3600 * dollars_per_hour
        return (
            f"Total time {_hms(total_s)}; estimated cost **${cost:,.2f}** at ${dollars_per_hour:,.2f}/hour."
        )
    costs = [(s.stage, *stage_cost(s, None, rates)) for s in stages]
    known = [(st, c, basis) for st, c, basis in costs if c is not None]
    missing = sorted({basis for _, c, basis in costs if c is None})
    line = f"Total time {_hms(total_s)}; "
    if known:
        bases = "; ".join(sorted({basis for _, _, basis in known}))
        line += f"estimated cost **${sum(c for _, c, _ in known):,.2f}** ({bases})"
        if missing:
            line += (
                f"; not counted: {', '.join(st for st, c, _ in costs if c is None)} ({'; '.join(missing)})"
            )
        return line + "."
    return line + f"no cost estimate ({'; '.join(missing) or 'no stage'})."


def _peak(hardware: dict[str, Any]) -> str:
    peak = float(hardware["peak_flops_per_device"])
    value = f"{peak / 1e12:,.1f} TFLOP/s" if peak >= 1e12 else f"{peak / 1e9:,.0f} GFLOP/s"
    return f"of {value} per device ({hardware.get('peak_source', 'recorded')})"


def _fmt(x: Any) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4f}"


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
