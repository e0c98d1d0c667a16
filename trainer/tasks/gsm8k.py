"""GSM8K (openai/gsm8k, config `main`): grade-school word problems solved with a python tool.

A real row has `question` and `answer`; the answer's arithmetic is annotated for a calculator,
and its last line is the final number:

    Natalia sold 48/2 = <<48/2=24>>24 clips in May.
    ...
    #### 72

Each `<<expr=result>>` becomes a tool call inside the assistant message, `print(expr)`, followed by
its output `result`, as nanochat does with its calculator: the model learns to hand arithmetic to
python rather than guess digits. Only the train split is used for training; the test split is kept
for evaluation, and validation holds out the last rows of train.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from chatforge.chat import Conversation, Message, Part, PythonCall, PythonOutput, TextPart, message

from .base import RowTask
from .hub import HubLoad, check_split, load_rows

HUB_PATH = "openai/gsm8k"
HUB_CONFIG = "main"
# 7,473 train rows; the last 500 are held out for validation loss, never the test split
HUB_SPLITS = {"train": "train[:-500]", "val": "train[-500:]"}

_CALC = re.compile(r"<<([^<>]*)>>")
_ANSWER = re.compile(r"####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


def extract_answer(text: str) -> str | None:
    """The number after the first `####`, commas removed ("#### 1,200" -> "1200"); None if absent."""
    match = _ANSWER.search(text)
    if match is None:
        return None
    return match.group(1).replace(",", "")


def gsm8k_conversation(row: Mapping[str, Any]) -> Conversation:
    """Convert a row with `question` and an annotated `answer` to a user/assistant conversation."""
    return Conversation((message("user", row["question"]), Message("assistant", tool_parts(row["answer"]))))


def tool_parts(answer: str) -> tuple[Part, ...]:
    """Split an annotated solution into text, `print(expr)` calls and their outputs."""
    parts: list[Part] = []
    pos = 0
    for match in _CALC.finditer(answer):
        if match.start() > pos:
            parts.append(TextPart(answer[pos : match.start()]))
        expr, _, result = match.group(1).rpartition("=")
        if not expr:  # an annotation without "=": the whole thing is the expression, output unknown
            expr, result = result, ""
        parts.append(PythonCall(f"print({expr.strip()})"))
        parts.append(PythonOutput(result.strip()))
        pos = match.end()
    if pos < len(answer):
        parts.append(TextPart(answer[pos:]))
    return tuple(parts)


def load_gsm8k(split: str = "train", *, load: HubLoad | None = None, limit: int | None = None) -> RowTask:
    """GSM8K from the hub: train rows, or the held-out tail of train for `split="val"`."""
    rows = load_rows(load, HUB_PATH, HUB_CONFIG, HUB_SPLITS[check_split(split)])
    return RowTask("gsm8k", rows, gsm8k_conversation, limit=limit)
