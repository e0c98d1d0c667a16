"""Chat evals: answer extraction (malformed answers too), categorical scoring, GSM8K through the
engine with a tool call, HumanEval through the sandbox, spelling rows, ChatCORE."""

from __future__ import annotations

import json

import pytest
import torch
from inference_svc.driver import EngineDriver

from tests.eval.conftest import LocalPython, bigram_model, tool_script
from trainer.eval.chat_eval import (
    ChatEvalError,
    ChatResult,
    arc_task,
    chatcore,
    evaluate_chat_task,
    extract_code,
    extract_number,
    gsm8k_task,
    humaneval_program,
    humaneval_task,
    load_chat_tasks,
    mmlu_task,
    same_number,
    spelling_rows,
)


@pytest.mark.parametrize(
    ("reply", "number"),
    [
        ("so the answer is\n#### 72", "72"),
        ("#### 1,200 dollars", "1200"),
        ("#### $5", "5"),
        ("####-3.5", "-3.5"),
        ("first #### 4 then #### 5", "4"),
        ("the answer is 72", None),  # no marker: a bare number does not count
        ("#### ", None),
        ("#### seventy", None),
        ("", None),
    ],
)
def test_extract_number(reply, number):
    assert extract_number(reply) == number


def test_same_number():
    assert same_number("18", "18.0") and same_number("-3", "-3.00")
    assert not same_number("18", "19")
    assert not same_number(None, "1") and not same_number("1", None)
    assert not same_number("1.2.3", "1")


def test_extract_code_and_program():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone") == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n") == "x = 1\n"  # an unclosed fence runs to the end
    assert extract_code("    return a + b\n") == "    return a + b\n"
    row = {
        "prompt": "def add(a, b):\n",
        "entry_point": "add",
        "test": "def check(f):\n    assert f(1, 2) == 3\n",
    }
    body = humaneval_program(row, "    return a + b\n")
    assert body.startswith("def add(a, b):\n    return a + b\n") and body.endswith("check(add)\n")
    whole = humaneval_program(row, "```python\ndef add(a, b):\n    return b + a\n```")
    assert whole.count("def add") == 1


ARC_ROWS = [
    {
        "question": "Which is a mammal?",
        "choices": {"text": ["whale", "shark"], "label": ["A", "B"]},
        "answerKey": "A",
    },
    {
        "question": "Which is hot?",
        "choices": {"text": ["ice", "fire", "snow"], "label": ["1", "2", "3"]},
        "answerKey": "2",
    },
]


def test_categorical_ties_go_to_the_first_allowed_letter(tiny_tokenizer):
    """A zero head scores every letter alike: the answer is A, right for row 0, wrong for row 1."""
    from chatforge.model import GPT, GPTConfig

    model = GPT(
        GPTConfig(
            vocab_size=tiny_tokenizer.vocab_size,
            n_layer=1,
            n_embd=64,
            n_head=1,
            n_kv_head=1,
            sequence_len=256,
        )
    )
    torch.nn.init.zeros_(model.lm_head.weight)
    result = evaluate_chat_task(model, tiny_tokenizer, arc_task("arc_easy", ARC_ROWS))
    assert (result.accuracy, result.n_examples) == (0.5, 2)
    assert result.centered == pytest.approx((0.5 - 0.25) / 0.75)


def test_categorical_answer_is_always_an_allowed_letter(tiny_model, tiny_tokenizer):
    rows = [{"question": f"q{i}", "choices": ["a", "b"], "answer": i % 2} for i in range(6)]
    task = mmlu_task(rows)
    batched = evaluate_chat_task(tiny_model, tiny_tokenizer, task, batch_rows=6, keep_samples=6)
    single = evaluate_chat_task(tiny_model, tiny_tokenizer, task, batch_rows=1, keep_samples=6)
    assert batched.accuracy == single.accuracy
    assert [s["correct"] for s in batched.samples] == [s["correct"] for s in single.samples]


def test_gsm8k_through_the_engine_with_a_tool_call(script_tokenizer):
    """The scripted model calls python for 6*7 and answers `#### 42`: right for the first row only."""
    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok))
    rows = [
        {"question": "What is 6 times 7?", "answer": "6*7 = <<6*7=42>>42\n#### 42"},
        {"question": "What is 6 times 7 minus 1?", "answer": "#### 41"},
    ]
    generator = EngineDriver.for_model(model, tok, tool_executor=LocalPython())
    try:
        result = evaluate_chat_task(model, tok, gsm8k_task(rows, max_tokens=40), generator=generator)
    finally:
        generator.close()
    assert (result.accuracy, result.centered, result.n_examples) == (0.5, 0.5, 2)
    assert result.samples[0]["reply"].strip() == "#### 42" and result.samples[0]["correct"]
    with pytest.raises(ChatEvalError, match="needs a generator"):
        evaluate_chat_task(model, tok, gsm8k_task(rows))


HUMANEVAL_ROW = {
    "task_id": "HumanEval/fixture",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n',
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}


def test_humaneval_through_the_sandbox_on_good_and_bad_solutions():
    try:
        from sandbox.executor import SandboxExecutor
    except ImportError as e:  # the sandbox part is optional in a checkout
        pytest.skip(f"sandbox executor not importable here: {e}")
    task = humaneval_task([HUMANEVAL_ROW], SandboxExecutor(), timeout_s=2.0)
    assert task.check(HUMANEVAL_ROW, "    return a + b\n")
    assert task.check(HUMANEVAL_ROW, "```python\ndef add(a, b):\n    return b + a\n```")
    assert not task.check(HUMANEVAL_ROW, "    return a - b\n")  # fails the tests
    assert not task.check(HUMANEVAL_ROW, "    return (\n")  # does not compile
    assert not task.check(HUMANEVAL_ROW, "    while True:\n        pass\n")  # times out


def test_spelling_rows_count_correctly_and_repeat():
    rows = spelling_rows(50)
    assert rows == spelling_rows(50)
    assert all(r["answer"] == r["word"].count(r["letter"]) for r in rows)
    assert any(r["answer"] == 0 for r in rows) or any(r["answer"] > 1 for r in rows)


def test_chatcore_and_task_loading(tmp_path):
    results = [ChatResult("arc_easy", 0.625, 0.5, 8), ChatResult("gsm8k", 0.1, 0.1, 10)]
    assert chatcore(results) == pytest.approx(0.3)
    (task,) = load_chat_tasks(["spelling"], data_dir=None, spelling_examples=7)
    assert len(task.rows) == 7
    with pytest.raises(ChatEvalError, match="chatforge eval data"):
        load_chat_tasks(["mmlu"], data_dir=tmp_path)
    rows = [{"question": "Q?", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "B"}]
    (tmp_path / "arc_easy.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (arc,) = load_chat_tasks(["arc_easy"], data_dir=tmp_path)
    assert list(arc.rows) == rows and arc.gold(rows[0]) == "B"
    with pytest.raises(ChatEvalError, match="unknown chat task"):
        load_chat_tasks(["trivia"], data_dir=tmp_path)
