"""Offline conversation rows in the real schemas, and the mid/sft mixtures built from them."""

from __future__ import annotations

import random

import pytest

from chatforge.chat import PythonCall, PythonOutput, render_conversation
from trainer.tasks.generated import gsm8k_row, identity_row, instruction_row, mmlu_row
from trainer.tasks.gsm8k import extract_answer, gsm8k_conversation
from trainer.tasks.hub import HubUnavailable
from trainer.tasks.mixtures import mixture
from trainer.tasks.mmlu import LETTERS, mmlu_conversation
from trainer.tasks.smoltalk import smoltalk_conversation


@pytest.mark.parametrize("seed", range(20))
def test_gsm8k_rows_compute_their_answer_with_tool_calls(seed):
    row = gsm8k_row(random.Random(seed))
    assert set(row) == {"question", "answer"}
    conv = gsm8k_conversation(row)
    parts = conv.messages[1].parts
    calls = [p for p in parts if isinstance(p, PythonCall)]
    outputs = [p for p in parts if isinstance(p, PythonOutput)]
    assert len(calls) == 2 and len(outputs) == 2
    # the annotated arithmetic is right: evaluating each call gives its output
    for call, out in zip(calls, outputs, strict=True):
        expr = call.code.removeprefix("print(").removesuffix(")")
        assert float(eval(expr)) == float(out.output)  # noqa: S307 - our own generated arithmetic
    assert extract_answer(row["answer"]) == outputs[-1].output


@pytest.mark.parametrize("seed", range(20))
def test_mmlu_rows_have_one_right_choice(seed):
    row = mmlu_row(random.Random(seed))
    assert set(row) == {"question", "choices", "answer", "subject"}
    assert len(row["choices"]) == 4 and len(set(row["choices"])) == 4
    conv = mmlu_conversation(row)
    assert conv.messages[1].text == LETTERS[row["answer"]]


def test_chat_rows_parse_in_smoltalk_schema_and_are_deterministic(tiny_tokenizer):
    for make in (identity_row, instruction_row):
        for seed in range(30):
            row = make(random.Random(seed))
            assert row == make(random.Random(seed))
            rendered = render_conversation(tiny_tokenizer, smoltalk_conversation(row))
            assert sum(rendered.mask) > 0


def test_mixtures_use_every_task_and_keep_val_apart_from_train():
    train = mixture("mid", "train", rows=40, seed=0)
    val = mixture("mid", "val", rows=40, seed=0)
    assert {d["name"] for d in train.describe()} == {"smoltalk", "mmlu", "gsm8k", "identity"}
    assert len(train) == 40 * 3 + 20  # identity has weight 0.5
    train_texts = {str(c.to_dict()) for c in train}
    overlap = sum(str(c.to_dict()) in train_texts for c in val)
    assert overlap < len(val) // 2  # generated from another seed stream (short items may repeat)
    sft = mixture("sft", "train", rows=40)
    assert len(sft) == 40 + 20 + 40 + 20


def test_hub_mixture_refuses_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="cannot be loaded from the hub"):
        mixture("sft", "train", source="hub", rows=10)
    with pytest.raises(ValueError, match="no task mixture"):
        mixture("base", "train")
