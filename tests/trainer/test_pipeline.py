"""`run_pipeline`: stages in order, each from the previous one's artifacts; finished ones skipped."""

from __future__ import annotations

from pathlib import Path

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from tests.trainer.conftest import tiny_config
from trainer.config import Preset, TokenizerConfig
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
    )
    lines: list[str] = []
    first = run_pipeline(recipe, local=True, log=lines.append)
    assert list(first) == ["base", "mid", "sft"]
    store = ArtifactStore(Path(root))
    assert store.tokenizers() == ["t"]
    assert [p.name for _, p in store.checkpoints()] == ["step_000002"] * 3

    lines.clear()
    assert run_pipeline(recipe, local=True, log=lines.append) == {}
    assert sum("skipping" in line for line in lines) == 4  # tokenizer and three stages

    sft_before = ckpt.read_meta(store.resolve_checkpoint("r/sft"))["saved_at"]
    again = run_pipeline(recipe, local=True, redo={"mid"}, log=lines.append)
    assert list(again) == ["mid", "sft"]  # mid and everything trained from it
    assert ckpt.read_meta(store.resolve_checkpoint("r/sft"))["saved_at"] > sft_before
