"""The shared train loop, run in this process (one worker): base, resume, mid, sft, telemetry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from tests.trainer.conftest import TOKENIZER, tiny_config
from trainer.driver import run_stage, stage_done
from trainer.errors import TrainError
from trainer.loop import Ranks, train_step
from trainer.optim import build_optimizers
from trainer.telemetry import read_log


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, artifacts, corpus_dir):
    """One finished 8-step base run in its own store (shared by the tests below)."""
    import shutil

    root = tmp_path_factory.mktemp("store")
    shutil.copytree(artifacts, root, dirs_exist_ok=True)
    cfg = tiny_config("base", root, corpus_dir, num_steps=12, eval_every_steps=6)
    metrics = run_stage(cfg, launcher="local")
    return cfg, metrics


def test_base_training_lowers_the_loss_and_writes_complete_checkpoints(base_run):
    cfg, metrics = base_run
    stage_dir = ArtifactStore(Path(cfg.artifacts_dir)).stage_dir("r", "base")
    losses = [e.loss for e in read_log(stage_dir / "log.jsonl", "progress")]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5
    vals = [e.val_bpb for e in read_log(stage_dir / "log.jsonl", "validation")]
    assert len(vals) == 2 and vals[1] < vals[0] and all(math.isfinite(v) for v in vals)
    meta = ckpt.read_meta(ckpt.latest(stage_dir))
    assert meta["step"] == 12 and meta["tokenizer"] == TOKENIZER and meta["stage"] == "base"
    assert meta["config"]["n_layer"] == 1 and meta["config"]["vocab_size"] == 512
    assert sorted(meta["data_position"]["slots"]) == ["0", "1", "2", "3"]
    assert meta["metrics"]["val_bpb"] == pytest.approx(metrics["val_bpb"])
    assert stage_done(cfg)
    samples = read_log(stage_dir / "log.jsonl", "samples")
    assert samples and len(samples[-1].samples) == 4


def test_resume_by_hand_continues_exactly_where_the_run_stopped(base_run, tmp_path):
    import shutil

    cfg, _ = base_run
    src = ArtifactStore(Path(cfg.artifacts_dir))
    final = ckpt.load(ckpt.latest(src.stage_dir("r", "base")), with_optimizer=False)
    # a copy of the run that "died" after its step-8 checkpoint
    root = tmp_path / "store"
    shutil.copytree(cfg.artifacts_dir, root)
    stage_dir = ArtifactStore(root).stage_dir("r", "base")
    shutil.rmtree(stage_dir / "step_000012")
    resumed = run_stage(cfg.with_(artifacts_dir=str(root)), launcher="local")
    starts = read_log(stage_dir / "log.jsonl", "start")
    assert starts[-1].step == 8 and starts[-1].resumed
    again = ckpt.load(ckpt.latest(stage_dir), with_optimizer=False)
    assert again.step == 12
    for name, tensor in final.model_state.items():
        torch.testing.assert_close(again.model_state[name], tensor, rtol=1e-5, atol=1e-6)
    assert resumed["train_loss"] == pytest.approx(final.meta["metrics"]["train_loss"], rel=1e-5)


def test_mid_and_sft_start_from_the_previous_stage(base_run, corpus_dir):
    cfg, _ = base_run
    root = cfg.artifacts_dir
    mid = run_stage(tiny_config("mid", root, corpus_dir, num_steps=4), launcher="local")
    sft = run_stage(tiny_config("sft", root, corpus_dir, num_steps=4), launcher="local")
    store = ArtifactStore(Path(root))
    for stage, metrics in (("mid", mid), ("sft", sft)):
        meta = ckpt.read_meta(ckpt.latest(store.stage_dir("r", stage)))
        assert meta["tokenizer"] == TOKENIZER and meta["step"] == 4
        assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_bpb"])
    # each starts from the previous stage's final checkpoint, found by name
    assert read_log(store.stage_dir("r", "mid") / "log.jsonl", "start")[0].init.endswith("base/step_000012")
    assert read_log(store.stage_dir("r", "sft") / "log.jsonl", "start")[0].init.endswith("mid/step_000004")


def test_a_stage_without_its_parent_says_which_stage_to_train(artifacts, corpus_dir, tmp_path):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(artifacts, root)
    with pytest.raises(TrainError, match="train that stage first"):
        run_stage(tiny_config("sft", root, corpus_dir), launcher="local")


def test_all_masked_batch_contributes_zero_never_nan(tiny_tokenizer):
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(1, tiny_tokenizer.vocab_size, sequence_len=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = tiny_config("sft", "/unused", "/unused")
    optimizers = build_optimizers(model, cfg.optim)
    x = torch.randint(0, 500, (2, 16))
    loss, _ = train_step(
        model, optimizers, [(x, torch.full_like(x, -1))], Ranks(0, 1, torch.device("cpu")), cfg
    )
    assert loss == 0.0
    for name, tensor in model.state_dict().items():
        assert torch.isfinite(tensor).all()
        torch.testing.assert_close(tensor, before[name])  # zero gradient: nothing moves


def test_progress_events_reach_redis_and_prometheus(artifacts, corpus_dir, tmp_path, monkeypatch):
    import json

    from chatforge import redisconn
    from chatforge.contracts.events import ProgressEvent, job_events_stream, parse_stream_entry
    from trainer.telemetry import Telemetry

    monkeypatch.delenv("REDIS_URL", raising=False)
    redis = redisconn.connect(embedded_dir=tmp_path / "redis")
    try:
        t = Telemetry(stage="base", run="r", log_path=tmp_path / "log.jsonl", total_steps=10, enabled=True,
                      job_id="job-abc", console=False)  # fmt: skip
        t.progress(
            step=3,
            loss=2.5,
            lr=0.01,
            tokens_per_s=1000.0,
            mfu=0.1,
            eta_s=5,
            tokens_total=300,
            print_line=True,
        )
        t.validation(step=3, bpb=1.25)
        entries = redis.xrange(job_events_stream("job-abc"))
        assert [e[1]["type"] for e in entries] == ["progress", "validation"]
        assert json.loads(entries[0][1]["data"])["loss"] == 2.5
        progress = parse_stream_entry(entries[0][1])  # what the gateway reads: the typed event
        assert isinstance(progress, ProgressEvent) and (progress.stage, progress.step) == ("base", 3)
        value = t.registry.get_sample_value
        assert value("chatforge_train_loss", {"stage": "base"}) == 2.5
        assert value("chatforge_train_val_bits_per_byte", {"stage": "base"}) == 1.25
        assert value("chatforge_train_tokens_total", {"stage": "base"}) == 300
        assert read_log(tmp_path / "log.jsonl", "progress")[0].line.startswith("[r/base] step")
    finally:
        redisconn.stop_embedded()
