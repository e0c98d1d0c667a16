"""`run_pipeline`: stages in order, each from the previous one's artifacts; finished ones skipped."""

from __future__ import annotations

import json
from pathlib import Path

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
