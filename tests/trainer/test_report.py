"""The report card's honest numbers: the recorded peak behind MFU, cost only at a rate that applies
to the hardware, scores of every stage side by side, and nanochat's d20 beside a d20 run."""

from __future__ import annotations

import pytest
import torch

from trainer.report import (
    NANOCHAT_D20,
    StageSummary,
    nanochat_comparison,
    render_markdown,
    stage_cost,
    summary_data,
)
from trainer.telemetry import PEAK_ENV, device_peak, measure_matmul_flops

CPU = {"device": "CPU (2 threads)", "kind": "cpu", "devices": 2, "peak_flops_per_device": 2.0e11,
       "peak_source": "matmul probe"}  # fmt: skip
H100 = {"device": "NVIDIA H100 80GB HBM3", "kind": "H100", "devices": 8, "peak_flops_per_device": 989e12,
        "peak_source": "data sheet"}  # fmt: skip


def _stage(name: str, hardware: dict, seconds: float = 3600.0, **kw) -> StageSummary:
    return StageSummary(name, checkpoint=f"r/{name}/step_000010", step=10, num_steps=10, duration_s=seconds,
                        tokens_per_s=1000.0, mfu=0.25, hardware=hardware, **kw)  # fmt: skip


def test_the_cpu_peak_is_measured_and_overridable(monkeypatch):
    monkeypatch.delenv(PEAK_ENV, raising=False)
    peak = device_peak(torch.device("cpu"))
    assert (peak.kind, peak.source) == ("cpu", "matmul probe")
    # the probe times real matmuls: a second, independent measurement lands near the first
    again = measure_matmul_flops(torch.device("cpu"), torch.float32, n=512, seconds=0.2)
    assert 1e8 < peak.flops < 1e14 and 0.05 < again / peak.flops < 20
    assert device_peak(torch.device("cpu"), 5e11) == (5e11, "--peak-flops", "cpu", peak.name)
    monkeypatch.setenv(PEAK_ENV, "7e11")
    assert device_peak(torch.device("cpu"))[:2] == (7e11, f"${PEAK_ENV}")
    monkeypatch.setenv(PEAK_ENV, "lots")  # not a number: ignored with a warning, the probe decides
    assert device_peak(torch.device("cpu")).source == "matmul probe"


def test_cost_applies_a_rate_only_to_the_hardware_it_is_for():
    cpu, gpu = _stage("base", CPU), _stage("sft", H100, seconds=1800.0)
    cost, why = stage_cost(cpu, None, None)
    assert cost is None and "--rate cpu=" in why  # no GPU-node rate on a laptop
    assert stage_cost(cpu, None, {"cpu": 0.1})[0] == pytest.approx(0.1)  # one machine, whatever the workers
    assert stage_cost(gpu, None, None)[0] == pytest.approx(0.5 * 8 * 3.0)  # the default H100 rate
    assert stage_cost(gpu, None, {"h100": 2.0})[0] == pytest.approx(0.5 * 8 * 2.0)
    assert stage_cost(gpu, 10.0, None)[0] == pytest.approx(5.0)  # one hourly rate for the run
    assert stage_cost(_stage("mid", {}), None, None)[0] is None

    text = render_markdown("r", [cpu], {}, {}, {}, None)
    assert "no cost estimate" in text and "$" not in text.split("## Summary")[1]
    assert "MFU 25.00% of 200 GFLOP/s per device (matmul probe)" in text
    assert "- hardware: 2 x CPU (2 threads)" in text
    assert summary_data("r", [cpu], {}, {}, None)["estimated_cost_dollars"] is None
    mixed = render_markdown("r", [cpu, gpu], {}, {}, {}, None)
    assert "estimated cost **$12.00** (8 x H100 at $3.00/device-hour); not counted: base" in mixed


def test_scores_of_every_stage_side_by_side():
    base = _stage(
        "base", CPU, evals=[{"checkpoint": "r/base/step_000010", "core": {"score": 0.1, "tasks": {}}}]
    )
    sft = _stage("sft", CPU, evals=[{"checkpoint": "r/sft/step_000010", "chat": {"chatcore": 0.05, "tasks": {
        "arc_easy": {"accuracy": 0.3, "centered": 0.06, "n": 4}, "gsm8k": {"accuracy": 0.02, "centered": 0.02, "n": 4}}}}])  # fmt: skip
    text = render_markdown("r", [base, sft], {}, {}, {}, None)
    table = text.split("### Scores by stage")[1].split("### Stages")[0]
    assert "| metric | base | sft |" in table
    assert "| CORE | 0.1000 | — |" in table and "| ARC-Easy | — | 0.3000 |" in table
    assert "| ChatCORE | — | 0.0500 |" in table
    assert "nanochat" not in text  # not a d20 run


def test_a_d20_run_is_compared_with_nanochats_published_d20():
    base = _stage("base", H100, settings={"depth": 20},
                  evals=[{"checkpoint": "r/base/step_000010", "core": {"score": 0.2, "tasks": {}}}])  # fmt: skip
    rows = {(m, st): (ref, ours) for m, st, ref, ours in nanochat_comparison([base])}
    assert rows[("CORE", "base")] == (0.2219, 0.2) and rows[("GSM8K", "rl")] == (0.0758, None)
    assert len(rows) == len(NANOCHAT_D20)
    text = render_markdown("r", [base], {}, {}, {}, None, pipeline={"preset": "d20", "stages": []})
    section = text.split("## Compared with nanochat's d20")[1]
    assert "| CORE | base | 0.2219 | 0.2000 | -0.0219 |" in section
    assert "| ChatCORE | sft | 0.0884 | — | — |" in section
    assert "| time (training stages) | all | 3h51m00s | 1h00m00s | — |" in section
    data = summary_data("r", [base], {}, {}, None, pipeline={"preset": "d20"})
    assert {"metric": "CORE", "stage": "base", "nanochat": 0.2219, "this_run": 0.2} in data["nanochat_d20"]
    tiny = render_markdown("r", [base], {}, {}, {}, None, pipeline={"preset": "tiny", "stages": []})
    assert "nanochat" not in tiny  # the preset decides, not the depth alone
