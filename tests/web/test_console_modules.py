"""The console's pure modules in the browser they ship to: chart data shaping and sparklines
(js/charts.js), a job's curves and stage timeline folded from its events (js/job_progress.js), and
the comparison rows (js/compare.js), fed the report card's own report.json."""

from __future__ import annotations

import pytest


@pytest.fixture
def modules(page, static_url):  # type: ignore[no-untyped-def]
    page.goto(f"{static_url}/")
    return page


def test_series_become_aligned_columns_with_gaps(modules) -> None:
    columns = modules.evaluate(
        """async () => {
        const { toColumns } = await import("/js/charts.js");
        return toColumns([
          { label: "base", points: [[1, 4.0], [2, 3.5], [3, 3.0]] },
          { label: "sft", points: [[3, 2.9], [5, 2.5]] },
        ]);
    }"""
    )
    assert columns == [[1, 2, 3, 5], [4.0, 3.5, 3.0, None], [None, None, 2.9, 2.5]]


def test_a_sparkline_is_a_named_image_with_its_checkpoint_marked(modules) -> None:
    result = modules.evaluate(
        """async () => {
        const { sparkline, describeCurve } = await import("/js/charts.js");
        const points = [[10, 4.0], [20, 3.0], [30, 2.5], [40, 2.25]];
        const svg = sparkline(points, { label: describeCurve("loss", points), mark: 28, width: 100, height: 20 });
        const xy = svg.querySelector("polyline").getAttribute("points").split(" ").map((p) => p.split(",").map(Number));
        const dot = svg.querySelector("circle");
        return {
          role: svg.getAttribute("role"), label: svg.getAttribute("aria-label"), xy,
          dot: dot && [Number(dot.getAttribute("cx")), Number(dot.getAttribute("cy"))],
          empty: sparkline([], { label: "loss: no data" }).childElementCount,
          one: describeCurve("bpb", [[5, 1.5]]), none: describeCurve("bpb", []),
        };
    }"""
    )
    assert result["role"] == "img"
    assert result["label"] == "loss 4 → 2.25 over steps 10–40"
    xs = [x for x, _ in result["xy"]]
    ys = [y for _, y in result["xy"]]
    assert xs == sorted(xs) and xs[0] == 3 and xs[-1] == 97  # padded 3px inside the 100px box
    assert ys[0] == 3 and ys[-1] == 17  # the highest loss at the top, the lowest at the bottom
    assert result["dot"] == result["xy"][2]  # step 28 marks the nearest point, step 30
    assert result["empty"] == 0
    assert result["one"] == "bpb 1.5 at step 5" and result["none"] == "bpb: no data"


def test_a_pipelines_events_become_curves_on_one_axis_and_a_stage_timeline(modules) -> None:
    """The contract's own events, as a pipeline writes them: base whole, its eval, sft part-way."""
    from chatforge.contracts.events import (
        DoneEvent,
        EvalEvent,
        JobStateEvent,
        ProgressEvent,
        StartEvent,
        ValidationEvent,
    )

    def progress(stage: str, step: int, loss: float, t: float) -> ProgressEvent:
        return ProgressEvent(stage=stage, time=t, step=step, loss=loss, lr=0.02, tokens_per_s=1000.0 * step,
                             mfu=0.1, eta_s=1.0)  # fmt: skip

    events = [
        JobStateEvent(state="running"),
        StartEvent(stage="base", time=100.0, step=0, num_steps=2, workers=1, resumed=False),
        progress("base", 1, 4.0, 101.0),
        progress("base", 2, 3.0, 102.0),
        ValidationEvent(stage="base", time=102.5, step=2, val_bpb=2.5),
        DoneEvent(stage="base", time=103.0, step=2, metrics={"val_bpb": 2.5}),
        StartEvent(stage="sft", time=110.0, step=0, num_steps=4, workers=1, resumed=False),
        progress("sft", 1, 2.0, 111.0),
        ValidationEvent(stage="sft", time=112.0, step=1, val_bpb=1.5),
        # the eval stage reports under the checkpoint's stage name, here base's
        EvalEvent(
            stage="base", time=120.0, checkpoint="r/base/step_000002", step=2, params=1, duration_s=3.0
        ),
        JobStateEvent(state="cancelled"),
    ]
    result = modules.evaluate(
        """async (events) => {
        const { JobProgress } = await import("/js/job_progress.js");
        const p = new JobProgress();
        for (const e of events) p.add(e.type, e);
        const xy = (name) => p.curves[name].map((c) => [c.stage, c.x, c.y]);
        return { loss: xy("loss"), bpb: xy("val_bpb"), tps: xy("tokens_per_s"), timeline: p.timeline, state: p.state };
    }""",
        [e.model_dump(mode="json") for e in events],
    )
    # sft's steps continue after base's last one on the shared axis
    assert result["loss"] == [["base", 1, 4.0], ["base", 2, 3.0], ["sft", 3, 2.0]]
    assert result["bpb"] == [["base", 2, 2.5], ["sft", 3, 1.5]]
    assert [x for _, x, _ in result["tps"]] == [1, 2, 3]
    assert result["timeline"] == [
        {"stage": "base", "start": 100.0, "end": 103.0, "step": 2, "numSteps": 2, "status": "done"},
        {"stage": "sft", "start": 110.0, "end": 112.0, "step": 1, "numSteps": 4, "status": "done"},
        {"stage": "eval", "start": 120.0, "end": 120.0, "step": 2, "numSteps": None, "status": "cancelled"},
    ]
    assert result["state"] == "cancelled"


def test_best_values_are_marked_by_direction_and_ties_mark_none(modules) -> None:
    result = modules.evaluate(
        """async () => {
        const { bestIndex, lowerIsBetter } = await import("/js/compare.js");
        return {
          lower: bestIndex([1.9, 1.2, null, 1.5], true), higher: bestIndex([0.1, 0.3, 0.2], false),
          tie: bestIndex([0.5, 0.5], false), alone: bestIndex([null, 0.4], false),
          directions: ["val_bpb", "final loss", "CORE", "chat arc_easy"].map(lowerIsBetter),
        };
    }"""
    )
    assert result == {
        "lower": 1,
        "higher": 1,
        "tie": -1,
        "alone": -1,
        "directions": [True, True, False, False],
    }


def test_checkpoint_rows_take_metrics_and_eval_results_side_by_side(modules) -> None:
    checkpoints = [
        {"id": "r/base/step_000002", "step": 2, "metrics": {"val_bpb": 1.9, "step": 2}, "eval": {"bpb": 1.8}},
        {
            "id": "r/sft/step_000004", "step": 4, "metrics": {"val_bpb": 1.5},
            "eval": {"bpb": 1.4, "core": {"score": 0.1, "tasks": {"piqa": {"accuracy": 0.6}}},
                     "chat": {"chatcore": 0.05, "tasks": {"arc_easy": {"accuracy": 0.3}}}},
        },
    ]  # fmt: skip
    rows = modules.evaluate(
        """async (checkpoints) => {
        const { checkpointRows } = await import("/js/compare.js");
        return checkpointRows(checkpoints);
    }""",
        checkpoints,
    )
    assert rows == [
        {"label": "step", "values": [2, 4], "better": None},
        {"label": "val_bpb", "values": [1.9, 1.5], "better": "lower"},
        {"label": "eval bpb", "values": [1.8, 1.4], "better": "lower"},
        {"label": "CORE", "values": [None, 0.1], "better": "higher"},
        {"label": "CORE piqa", "values": [None, 0.6], "better": "higher"},
        {"label": "ChatCORE", "values": [None, 0.05], "better": "higher"},
        {"label": "chat arc_easy", "values": [None, 0.3], "better": "higher"},
    ]


def test_report_rows_read_the_report_cards_own_json(modules) -> None:
    """report.json as trainer/report.py writes it (summary_data), for two runs that differ."""
    from trainer.report import StageSummary, summary_data

    def card(run: str, loss: float, tasks: dict[str, float]) -> dict:
        evals = [{"chat": {"chatcore": 0.1, "tasks": {t: {"accuracy": a} for t, a in tasks.items()}}}]
        stage = StageSummary(
            "sft", step=10, tokens=4096, duration_s=5.0, final_loss=loss, val_bpb=1.2, evals=evals
        )
        return summary_data(run, [stage], {}, {}, 24.0)

    reports = [card("a", 2.5, {"arc_easy": 0.3, "gsm8k": 0.1}), card("b", 2.1, {"arc_easy": 0.4})]
    rows = modules.evaluate(
        """async (reports) => {
        const { reportRows } = await import("/js/compare.js");
        return Object.fromEntries(reportRows(reports).map((r) => [r.label, [r.values, r.better]]));
    }""",
        reports,
    )
    assert rows["sft: final loss"] == [[2.5, 2.1], "lower"]
    assert rows["sft: val bpb"] == [[1.2, 1.2], "lower"]
    assert rows["sft: ChatCORE"] == [[0.1, 0.1], "higher"]
    assert rows["sft: chat arc_easy"] == [[0.3, 0.4], "higher"]
    assert rows["sft: chat gsm8k"] == [[0.1, None], "higher"]
    assert rows["sft: steps"] == [[10, 10], None]
    assert "sft: CORE" not in rows  # neither run measured it
    assert rows["estimated cost ($)"][0] == [pytest.approx(5 / 3600 * 24)] * 2
