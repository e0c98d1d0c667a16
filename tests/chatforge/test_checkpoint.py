from __future__ import annotations

import json
import multiprocessing
import os

import pytest
import torch

from chatforge import checkpoint
from chatforge.checkpoint import CheckpointError
from chatforge.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=50, n_layer=2, n_embd=32, n_head=2, n_kv_head=1, sequence_len=16)


def _model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(CONFIG)
    for block in model.blocks:
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.1)
    return model


def test_save_load_gives_identical_logits_and_optimizer(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 50, (2, 16))
    model(x[:, :-1], x[:, 1:]).backward()
    opt.step()
    path = checkpoint.save(
        tmp_path / "base", 7, model.state_dict(), optimizer_state=opt.state_dict(),
        config=CONFIG.to_dict(), data_position={"shard": 1, "row": 42}, metrics={"loss": 3.2},
    )  # fmt: skip
    assert path.name == "step_000007"
    ck = checkpoint.load(path)
    assert ck.step == 7 and ck.data_position == {"shard": 1, "row": 42}
    assert ck.meta["metrics"]["loss"] == 3.2 and ck.meta["code_version"]
    restored = GPT(GPTConfig.from_dict(ck.config))
    checkpoint.load_state_into(restored, ck.model_state)
    assert torch.equal(restored(x), model(x))
    opt2 = torch.optim.AdamW(restored.parameters(), lr=1e-3)
    opt2.load_state_dict(ck.optimizer_state)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _save_then_die(stage_dir: str) -> None:
    """Start writing a checkpoint and get killed while the weights are being written."""
    import safetensors.torch as st

    real = st.save_file

    def dying_save(tensors, filename, *a, **k):
        real(tensors, filename, *a, **k)
        with open(filename, "r+b") as f:  # leave a half-written file behind, as a crash would
            f.truncate(os.path.getsize(filename) // 2)
        os._exit(9)

    st.save_file = dying_save
    checkpoint.save(stage_dir, 20, _model().state_dict(), config=CONFIG.to_dict())


def test_crash_in_the_middle_leaves_no_checkpoint_that_looks_whole(tmp_path):
    stage = tmp_path / "base"
    good = checkpoint.save(stage, 10, _model().state_dict(), config=CONFIG.to_dict())
    proc = multiprocessing.get_context("spawn").Process(target=_save_then_die, args=(str(stage),))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    leftovers = [p.name for p in stage.iterdir()]
    assert any(name.startswith(".step_000020.tmp-") for name in leftovers)
    assert checkpoint.latest(stage) == good
    assert [p.name for p in checkpoint.list_checkpoints(stage)] == ["step_000010"]


def test_truncated_and_corrupted_files_are_named(tmp_path):
    path = checkpoint.save(tmp_path / "sft", 3, _model().state_dict(), optimizer_state={"a": torch.ones(3)})
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is \d+ bytes.*truncated"):
        checkpoint.load(path)
    corrupted = bytearray(data)
    corrupted[-1] ^= 0xFF
    weights.write_bytes(bytes(corrupted))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the sha256"):
        checkpoint.load(path)
    (path / "meta.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="meta.json is unreadable"):
        checkpoint.load(path)
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        checkpoint.load(path)


def test_mismatched_model_is_explained(tmp_path):
    path = checkpoint.save(tmp_path / "base", 1, _model().state_dict())
    other = GPT(GPTConfig(vocab_size=50, n_layer=3, n_embd=64, n_head=2, n_kv_head=1, sequence_len=16))
    ck = checkpoint.load(path)
    with pytest.raises(CheckpointError, match="does not fit the model.*missing.*shape mismatch"):
        checkpoint.load_state_into(other, ck.model_state)


def test_resave_same_step_replaces_and_prune_keeps_newest(tmp_path):
    stage = tmp_path / "base"
    for step in (1, 2, 3):
        checkpoint.save(stage, step, _model(step).state_dict(), metrics={"v": step})
    checkpoint.save(stage, 3, _model(9).state_dict(), metrics={"v": 9})
    meta = json.loads((stage / "step_000003" / "meta.json").read_text())
    assert meta["metrics"] == {"v": 9}
    removed = checkpoint.prune(stage, keep=2)
    assert [p.name for p in removed] == ["step_000001"]
    assert [p.name for p in checkpoint.list_checkpoints(stage)] == ["step_000002", "step_000003"]
