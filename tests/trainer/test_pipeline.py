"""`run_pipeline`: stages in order, each from the previous one's artifacts; finished ones skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.training import Preset, TokenizerConfig
from tests.trainer.conftest import tiny_config
from trainer.eval.stage import result_path
from trainer.pipeline import run_pipeline


def test_pipeline_runs_every_stage_once_and_redo_retrains_downstream(tmp_path, corpus_dir):
    root = tmp_path / "store"
    recipe = Preset(
        "test",
        TokenizerConfig(name="t", artifacts_dir=str(root), corpus_dir=str(corpus_dir), vocab_size=300),
        tuple(
            tiny_config(stage, root, corpus_dir, num_steps=2, checkpoint_every_steps=0)
            for stage in ("base", "mid", "sft")
        ),
        eval_docs=5,
        eval_examples=2,
    )
    lines: list[str] = []
    first = run_pipeline(recipe, local=True, log=lines.append)
    assert list(first) == ["base", "mid", "sft"]
    store = ArtifactStore(Path(root))
    assert store.tokenizers() == ["t"]
    assert [p.name for _, p in store.checkpoints()] == ["step_000002"] * 3
    # every stage is evaluated once and the run ends with its report card
    results = {s: result_path(store.resolve_checkpoint(f"r/{s}")) for s in ("base", "mid", "sft")}
    assert all(p.is_file() for p in results.values())
    assert "bpb" in json.loads(results["base"].read_text())
    assert "spelling" in json.loads(results["sft"].read_text())["chat"]["tasks"]
    assert (store.run_dir("r") / "report" / "report.md").is_file()
    evaluated_at = {s: p.stat().st_mtime_ns for s, p in results.items()}

    lines.clear()
    assert run_pipeline(recipe, local=True, log=lines.append) == {}
    assert sum("skipping" in line for line in lines) == 4  # tokenizer and three stages
    assert {s: p.stat().st_mtime_ns for s, p in results.items()} == evaluated_at  # not measured twice

    sft_before = ckpt.read_meta(store.resolve_checkpoint("r/sft"))["saved_at"]
    again = run_pipeline(recipe, local=True, redo={"mid"}, log=lines.append)
    assert list(again) == ["mid", "sft"]  # mid and everything trained from it
    assert ckpt.read_meta(store.resolve_checkpoint("r/sft"))["saved_at"] > sft_before
    assert results["base"].stat().st_mtime_ns == evaluated_at["base"]
    assert results["sft"].stat().st_mtime_ns > evaluated_at["sft"]


def test_pipeline_runs_rl_when_asked_and_records_every_stage(tmp_path, corpus_dir, monkeypatch, capsys):
    """RL after SFT (the preset's `with_rl`), then eval and the report; pipeline.json holds each
    stage's wall time and result, and the report card shows them; a rerun skips RL as finished.
    RL's steps draw a progress bar like the training stages'."""
    from chatforge.contracts.training import RLConfig
    from trainer.pipeline import read_pipeline

    root = tmp_path / "store"
    rows = tmp_path / "rows.jsonl"  # questions short enough for the d1 model's 64-token context
    rows.write_text(
        "".join(json.dumps({"question": f"{n}+1?", "answer": f"#### {n + 1}"}) + "\n" for n in range(4))
    )
    rl = RLConfig(run="r", artifacts_dir=str(root), num_steps=2, questions_per_step=1, samples_per_question=2,
                  max_new_tokens=8, eval_every_steps=2, eval_questions=1, pass_k=2, checkpoint_every_steps=2,
                  tools="none", rows_file=str(rows))  # fmt: skip
    recipe = Preset(
        "test",
        TokenizerConfig(name="t", artifacts_dir=str(root), corpus_dir=str(corpus_dir), vocab_size=300),
        tuple(
            tiny_config(stage, root, corpus_dir, num_steps=2, checkpoint_every_steps=0)
            for stage in ("base", "mid", "sft")
        ),
        eval_docs=5,
        eval_examples=2,
        rl=rl,
        with_rl=True,
    )
    lines: list[str] = []
    monkeypatch.setenv("CHATFORGE_PROGRESS", "1")
    ran = run_pipeline(recipe, local=True, log=lines.append)
    assert list(ran) == ["base", "mid", "sft", "rl"]
    bars = capsys.readouterr().err.split("\r")
    assert any(b.startswith("r/rl: 100%") and "2/2" in b and "step/s" in b for b in bars), "RL's bar"
    store = ArtifactStore(Path(root))
    assert ckpt.read_meta(store.resolve_checkpoint("r/rl"))["step"] == 2
    rl_eval = json.loads(result_path(store.resolve_checkpoint("r/rl")).read_text())
    assert rl_eval["stage"] == "rl" and "spelling" in rl_eval["chat"]["tasks"]  # the RL model is measured too

    # MFU is against the peak the run measured and recorded, not a guessed one
    from trainer.report import _model_size
    from trainer.telemetry import read_log

    meta = ckpt.read_meta(store.resolve_checkpoint("r/base"))
    hardware = meta["hardware"]
    assert (hardware["kind"], hardware["peak_source"], hardware["devices"]) == ("cpu", "matmul probe", 1)
    flops_per_token = _model_size(meta["config"])[1]
    progress = [e for e in read_log(store.stage_dir("r", "base") / "log.jsonl") if e.type == "progress"]
    assert progress and all(
        e.mfu == pytest.approx(flops_per_token * e.tokens_per_s / hardware["peak_flops_per_device"])
        for e in progress
    )
    assert ckpt.read_meta(store.resolve_checkpoint("r/rl"))["hardware"]["kind"] == "cpu"

    record = read_pipeline(store.run_dir("r"))
    assert [s["stage"] for s in record["stages"]] == [
        "tokenizer",
        "base",
        "mid",
        "sft",
        "rl",
        "eval",
        "report",
    ]
    for entry in record["stages"]:
        assert entry["status"] == "ran" and entry["seconds"] >= 0, entry
    assert "pass@2" in next(s for s in record["stages"] if s["stage"] == "rl")["result"]
    assert "val bpb" in next(s for s in record["stages"] if s["stage"] == "base")["result"]
    text = (store.run_dir("r") / "report" / "report.md").read_text()
    assert "## Pipeline" in text and "| rl | ran |" in text and "## Stage `rl`" in text
    assert "### Scores by stage" in text and "| Spelling |" in text

    lines.clear()
    assert run_pipeline(recipe, local=True, log=lines.append) == {}
    assert any(line.startswith("[r/rl] finished earlier; skipping") for line in lines)
    again = {s["stage"]: s for s in read_pipeline(store.run_dir("r"))["stages"]}
    assert again["rl"]["status"] == "finished earlier"
    assert again["rl"]["seconds"] == next(s for s in record["stages"] if s["stage"] == "rl")["seconds"]


def test_pipeline_without_rl_says_why(tmp_path, monkeypatch, capsys):
    """The tiny preset's recipe skips RL with its reason, in the output and in the report card; the
    eval measures CORE and the chat evals on what `make evaldata` left beside the corpus; the long
    steps besides training (tokenizer, evals) draw progress bars with their rate and ETA."""
    from dataclasses import replace

    from chatforge.contracts.training import preset
    from tests.trainer.conftest import write_corpus
    from trainer.eval.core import CoreTask
    from trainer.eval.core_data import write_bundle

    corpus_dir = write_corpus(tmp_path / "data" / "corpus", docs_per_shard=60)
    # data/eval as `make evaldata` writes it: a CORE bundle and chat eval sets
    write_bundle(tmp_path / "data" / "eval" / "core", [
        CoreTask("mc", "multiple_choice", [{"query": f"Q{i}:", "choices": ["yes", "no"], "gold": i % 2} for i in range(3)], 0, " ", 50.0),
    ])  # fmt: skip
    (tmp_path / "data" / "eval" / "chat").mkdir()
    (tmp_path / "data" / "eval" / "chat" / "gsm8k.jsonl").write_text(
        json.dumps({"question": "What is 2 + 2?", "answer": "#### 4"}) + "\n"
    )
    root = tmp_path / "store"
    tiny = preset("tiny", run="r", artifacts_dir=str(root), corpus_dir=str(corpus_dir))
    assert not tiny.with_rl and tiny.rl is not None and "--rl" in tiny.rl_note
    recipe = replace(
        tiny,
        tokenizer=replace(tiny.tokenizer, name="t", vocab_size=300),
        stages=tuple(
            tiny_config(s.stage, root, corpus_dir, num_steps=1, checkpoint_every_steps=0) for s in tiny.stages
        ),  # fmt: skip
        eval_docs=3,
        eval_examples=1,
    )
    lines: list[str] = []
    monkeypatch.setenv("CHATFORGE_PROGRESS", "1")  # bars even though stderr is not a terminal here
    ran = run_pipeline(recipe, local=True, log=lines.append, rates={"cpu": 0.5})
    assert list(ran) == ["base", "mid", "sft"]
    err = capsys.readouterr().err
    for bar, unit in (("[t/tokenizer] reading", "doc/s"), ("[r/base] eval bpb", "batch/s"),
                      ("[r/base] eval CORE", "example/s"), ("[r/sft] eval chat", "example/s")):  # fmt: skip
        slow = "s/" + unit.split("/")[0]  # tqdm writes s/<unit> below one unit per second (a loaded CI)
        assert any(
            bar in line and (unit in line or slow in line) and "100%" in line for line in err.split("\r")
        ), bar
    assert f"[r/rl] {tiny.rl_note}" in lines
    assert lines.index(f"[r/rl] {tiny.rl_note}") < min(i for i, line in enumerate(lines) if "] eval" in line)
    from trainer.pipeline import read_pipeline

    order = [s["stage"] for s in read_pipeline(ArtifactStore(Path(root)).run_dir("r"))["stages"]]
    assert order == ["tokenizer", "base", "mid", "sft", "rl", "eval", "report"]
    text = (ArtifactStore(Path(root)).run_dir("r") / "report" / "report.md").read_text()
    assert f"| rl | skipped | — | {tiny.rl_note} |" in text
    assert "(1 x cpu at $0.50/device-hour)" in text  # the pipeline's --rate prices the report
    store = ArtifactStore(Path(root))
    base = json.loads(result_path(store.resolve_checkpoint("r/base")).read_text())
    assert set(base["core"]["tasks"]) == {"mc"} and "CORE = " in text
    sft = json.loads(result_path(store.resolve_checkpoint("r/sft")).read_text())
    assert set(sft["chat"]["tasks"]) == {"gsm8k", "spelling"} and "| GSM8K |" in text
