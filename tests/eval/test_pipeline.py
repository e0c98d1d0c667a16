"""A tiny pipeline end to end: base and SFT training, the eval stage (bpb, CORE, chat evals),
RL, then the report card, whose plots must be real PNGs with something drawn on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from chatforge.artifacts import ArtifactStore
from chatforge.cli import main
from tests.trainer.conftest import TOKENIZER, tiny_config, write_corpus
from trainer.eval.core import CoreTask
from trainer.eval.core_data import write_bundle

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_tiny_pipeline_ends_with_a_report(tmp_path, tiny_tokenizer, capsys):
    import matplotlib.image as mpimg

    from chatforge.contracts.training import RLConfig
    from trainer.driver import run_stage
    from trainer.eval.stage import EvalConfig, read_results, run_eval
    from trainer.report import write_report
    from trainer.rl import rl_worker

    root, corpus = tmp_path / "artifacts", write_corpus(tmp_path / "corpus", docs_per_shard=60)
    store = ArtifactStore(root)
    tiny_tokenizer.save(store.tokenizer_path(TOKENIZER))
    common = dict(
        sequence_len=128, num_steps=4, log_every_steps=1, eval_every_steps=2, checkpoint_every_steps=4
    )
    run_stage(tiny_config("base", root, corpus, **common), launcher="local")
    run_stage(tiny_config("sft", root, corpus, init_from="r/base", **common), launcher="local")

    bundle = write_bundle(tmp_path / "core", [
        # 3 examples against a 25% baseline: the centred score cannot be 0, so CORE has a bar
        CoreTask("mc", "multiple_choice", [{"query": f"Question {i}:", "choices": ["yes", "no"], "gold": i % 2} for i in range(3)], 1, " ", 25.0),
        CoreTask("lm", "language_modeling", [{"context": "one two", "continuation": "three"}] * 2, 0, " ", 0.0),
    ])  # fmt: skip
    chat = tmp_path / "chat"
    chat.mkdir()
    (chat / "gsm8k.jsonl").write_text(json.dumps({"question": "What is 2 + 2?", "answer": "#### 4"}) + "\n")
    base = run_eval(
        EvalConfig(
            "r/base", str(root), corpus_dir=str(corpus), bpb_docs=10, core_bundle=str(bundle), tools="none"
        )
    )
    assert base["bpb"] > 0 and set(base["core"]["tasks"]) == {"mc", "lm"} and "chat" not in base
    sft = run_eval(
        EvalConfig("r/sft", str(root), corpus_dir="", chat_data=str(chat), max_examples=3, tools="none")
    )
    assert set(sft["chat"]["tasks"]) == {"gsm8k", "spelling"}
    assert [r["step"] for r in read_results(store.stage_dir("r", "sft"))] == [4]

    rl = RLConfig(run="r", artifacts_dir=str(root), num_steps=2, questions_per_step=1, samples_per_question=2,
                  max_new_tokens=8, eval_every_steps=2, eval_questions=1, pass_k=2, checkpoint_every_steps=2, tools="none")  # fmt: skip
    rl_worker(rl.to_dict())

    report = write_report("r", artifacts_dir=root, dollars_per_hour=3.0, corpus_dir=str(corpus))
    text = report.read_text()
    for needle in ("## Environment", "## Stage `base`", "## Stage `sft`", "## Stage `rl`", "CORE = ", "ChatCORE = ",
                   "| gsm8k |", "## Summary", "estimated cost", "bytes per token", "parameters:"):  # fmt: skip
        assert needle in text, needle
    for name in ("loss.png", "bpb.png", "lr.png", "throughput.png", "evals.png", "rl.png"):
        path = report.parent / name
        assert f"]({name})" in text
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        rgb = np.asarray(mpimg.imread(path))[..., :3]
        # Axes and text are grey; data (lines, bars, markers) is drawn in colour.
        coloured = int(((rgb.max(-1) - rgb.min(-1)) > 0.25).sum())
        assert coloured > 600, f"{name} has no data drawn ({coloured} coloured pixels)"

    data = json.loads((report.parent / "report.json").read_text())
    assert [r["stage"] for r in data["stages"]] == ["base", "sft", "rl"]
    assert data["stages"][0]["core"] == base["core"]["score"] and data["estimated_cost_dollars"] > 0
    assert main(["report", "r", "--artifacts", str(root)]) == 0
    assert capsys.readouterr().out.strip().endswith("report.md")
    assert main(["eval", "run", "r/base", "r/sft/step_000004", "--artifacts", str(root), "--corpus-dir", "", "--tools", "none",
                 "--chat-data", str(chat), "--max-examples", "1"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[r/base/step_000004] eval") and "ChatCORE" in lines[1]
    assert main(["eval", "run", "r/nope", "--artifacts", str(root)]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err
