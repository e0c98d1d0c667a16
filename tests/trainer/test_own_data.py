"""README's "My documents, my model's name", step by step: a few text files become a corpus, the
tokenizer and the stages train on it, and midtraining and SFT teach the identity file's name."""

from __future__ import annotations

from pathlib import Path

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.cli import main
from chatforge.contracts.training import TrainConfig
from chatforge.tokenizer import Tokenizer
from tests.conftest import sample_texts

IDENTITY = """\
name: Quill
maker: the Inkwell reading group
persona: a small model trained on our book notes
conversations:
  - - {role: user, content: "What is your name?"}
    - {role: assistant, content: "I am {name}, made by {maker}."}
"""
# The stages' flags for a model small enough for a test: what `--preset tiny` sets, scaled down.
SMALL = ["--depth", "1", "--sequence-len", "64", "--device-batch-rows", "2", "--total-batch-tokens", "128",
         "--num-steps", "2", "--task-rows", "40", "--eval-every-steps", "0", "--local"]  # fmt: skip


def test_my_documents_and_my_models_name(tmp_path, capsys):
    docs = tmp_path / "my_notes"
    docs.mkdir()
    for i, text in enumerate(sample_texts(n_docs=40, seed=3)):
        (docs / f"note_{i:02d}.txt").write_text(text)
    corpus, store = tmp_path / "my_corpus", tmp_path / "artifacts"
    (tmp_path / "me.yaml").write_text(IDENTITY)
    run = ["--run", "quill", "--artifacts", str(store)]

    assert main(["data", "convert", "--in", str(docs), "--out", str(corpus), "--val-fraction", "0.1"]) == 0
    assert main(["train", "tokenizer", *run, "--corpus-dir", str(corpus), "--vocab-size", "300"]) == 0
    assert main(["train", "base", *run, "--corpus-dir", str(corpus), *SMALL]) == 0
    for stage in ("mid", "sft"):
        assert main(["train", stage, *run, *SMALL, "--identity", str(tmp_path / "me.yaml")]) == 0
    capsys.readouterr()

    artifacts = ArtifactStore(store)
    tokenizer = Tokenizer.load(artifacts.tokenizer_path("quill"))
    base = ckpt.read_meta(artifacts.resolve_checkpoint("quill/base"))
    assert base["train_config"]["corpus_dir"] == str(corpus)  # trained on my documents
    from trainer.stages import stage_data

    for stage in ("mid", "sft"):
        meta = ckpt.read_meta(artifacts.resolve_checkpoint(f"quill/{stage}"))
        cfg = TrainConfig.from_dict(meta["train_config"])
        assert Path(cfg.identity) == tmp_path / "me.yaml"
        mixture = stage_data(cfg, tokenizer).train.conversations  # what the stage trained on
        mine = [mixture[i] for i in range(len(mixture)) if mixture.task_of(i) == "identity"]
        assert mine, stage
        answers = {m.text for c in mine for m in c.messages if m.role == "assistant"}
        assert "I am Quill, made by the Inkwell reading group." in answers
        everything = " ".join(m.text for i in range(len(mixture)) for m in mixture[i].messages)
        assert "chatforge" not in everything and "You are Quill." in everything

    assert main(["train", "mid", *run, *SMALL, "--identity", str(tmp_path / "nobody.yaml")]) == 1
    assert "--identity" in capsys.readouterr().err  # a wrong path is one line, before training
