"""The one loader: artifact names and directories, the tokenizer checked against the vocabulary,
the device/dtype policy, and optimizer state for a resumed run."""

from __future__ import annotations

import pytest
import torch

from chatforge import checkpoint
from chatforge.artifacts import ArtifactError, ArtifactStore
from chatforge.checkpoint import CheckpointError
from chatforge.loading import load_model
from chatforge.model import GPT, GPTConfig


@pytest.fixture
def store(tmp_path, tiny_tokenizer):
    store = ArtifactStore(tmp_path)
    tiny_tokenizer.save(store.tokenizer_path("tok"))
    return store


def _save(store: ArtifactStore, step: int, *, vocab_size: int, tokenizer: str | None = "tok", optimizer=None):
    torch.manual_seed(step)
    config = GPTConfig(vocab_size=vocab_size, n_layer=1, n_embd=32, n_head=2, n_kv_head=1, sequence_len=16)
    model = GPT(config)
    extra = {"tokenizer": tokenizer} if tokenizer else {}
    path = checkpoint.save(store.stage_dir("r", "sft"), step, model.state_dict(), config=config.to_dict(),
                           optimizer_state=optimizer, metrics={"loss": 1.5}, extra=extra)  # fmt: skip
    return model, path


def test_by_name_or_directory_with_the_tokenizer_it_names(store, tiny_tokenizer):
    _save(store, 1, vocab_size=tiny_tokenizer.vocab_size)
    model, path = _save(store, 2, vocab_size=tiny_tokenizer.vocab_size)
    x = torch.randint(0, tiny_tokenizer.vocab_size, (1, 8))
    for name in ("r/sft", "r/sft/step_000002", str(path)):
        loaded = load_model(name, store, device="cpu")
        assert loaded.path == path and loaded.step == 2 and loaded.metrics == {"loss": 1.5}
        assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == tiny_tokenizer.vocab_size
        assert not loaded.model.training and loaded.optimizer_state is None
        assert torch.equal(loaded.model(x), model(x))
    assert load_model("r/sft/step_000001", store).step == 1
    with pytest.raises(ArtifactError, match="no complete checkpoint"):
        load_model("r/mid", store)


def test_the_tokenizer_must_match_the_vocabulary(store, tiny_tokenizer):
    _save(store, 1, vocab_size=tiny_tokenizer.vocab_size + 64)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_model("r/sft", store)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_model("r/sft", store, tokenizer=tiny_tokenizer)


def test_a_checkpoint_without_a_tokenizer(store, tiny_tokenizer):
    _save(store, 1, vocab_size=tiny_tokenizer.vocab_size, tokenizer=None)
    with pytest.raises(CheckpointError, match="names no tokenizer"):
        load_model("r/sft", store)
    assert load_model("r/sft", store, need_tokenizer=False).tokenizer is None  # a server of raw ids
    assert load_model("r/sft", store, tokenizer="tok").tokenizer is not None
    path = store.tokenizer_path("tok")  # a tokenizer.json path works too
    assert load_model("r/sft", store, tokenizer=str(path)).tokenizer is not None


def test_device_dtype_policy_and_context_override(store, tiny_tokenizer):
    _save(store, 1, vocab_size=tiny_tokenizer.vocab_size)
    for serving in (False, True):  # bfloat16 is for serving on CUDA only: float32 on the CPU
        weights = next(load_model("r/sft", store, device="cpu", serving=serving).model.parameters())
        assert weights.device.type == "cpu" and weights.dtype == torch.float32
    assert load_model("r/sft", store, sequence_len=64).model.config.sequence_len == 64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_serving_on_cuda_is_bfloat16(store, tiny_tokenizer):
    _save(store, 1, vocab_size=tiny_tokenizer.vocab_size)
    assert next(load_model("r/sft", store).model.parameters()).device.type == "cuda"  # the default
    assert next(load_model("r/sft", store, serving=True).model.parameters()).dtype == torch.bfloat16
    assert next(load_model("r/sft", store).model.parameters()).dtype == torch.float32


def test_optimizer_state_for_a_resumed_run(store, tiny_tokenizer):
    model, _ = _save(store, 1, vocab_size=tiny_tokenizer.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 50, (1, 8)), torch.randint(0, 50, (1, 8))).backward()
    opt.step()
    _save(store, 2, vocab_size=tiny_tokenizer.vocab_size, optimizer={"optimizers": [opt.state_dict()]})
    loaded = load_model("r/sft", store, with_optimizer=True)
    fresh = torch.optim.AdamW(loaded.model.parameters(), lr=1e-3)
    loaded.restore_optimizers([fresh])
    assert fresh.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(CheckpointError, match="no optimizer state"):
        loaded.restore_optimizers([fresh, fresh])
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_model("r/sft/step_000001", store, with_optimizer=True).restore_optimizers([fresh])


def test_the_architecture_options_come_back_from_the_checkpoint(store, tiny_tokenizer):
    """Value embeddings, a sliding-window pattern and GQA are plain config fields saved with the
    weights; a later stage loading at another context length keeps the windows it learnt."""
    config = GPTConfig(
        vocab_size=tiny_tokenizer.vocab_size, n_layer=3, n_embd=64, n_head=4, n_kv_head=1, sequence_len=32,
        window_pattern="SL", value_embeds=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT(config)
    checkpoint.save(store.stage_dir("r", "base"), 1, model.state_dict(), config=config.to_dict(),
                    extra={"tokenizer": "tok"})  # fmt: skip
    loaded = load_model("r/base", store, device="cpu", sequence_len=128)
    got = loaded.model.config
    assert (got.window_pattern, got.short_window, got.value_embeds, got.n_kv_head) == ("SL", 8, True, 1)
    assert got.sequence_len == 128 and got.layer_windows() == [8, None, None]
    assert sorted(loaded.model.value_embeds) == ["0", "2"]
    x = torch.randint(0, tiny_tokenizer.vocab_size, (1, 20))
    torch.testing.assert_close(loaded.model(x), model.eval()(x))
