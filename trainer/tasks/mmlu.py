"""MMLU (cais/mmlu): four-way multiple choice, answered with a single letter.

A row has `question`, `choices` (a list of strings), `answer` (the index of the right choice) and
`subject`. Training uses the `auxiliary_train` config (~100k questions drawn from ARC, OBQA, RACE
and others), never MMLU's own test split, which is for evaluation. The auxiliary_train rows on the
hub come wrapped in a `train` field; the converter unwraps them.

The prompt lists the choices as "A. ...", one per line, and the assistant answers with the letter
alone: the same token as in the prompt (a newline, not a space, precedes each letter), which a
small model binds to more easily than " A".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chatforge.chat import Conversation, message

from .base import RowTask
from .hub import HubLoad, check_split, load_rows

HUB_PATH = "cais/mmlu"
HUB_CONFIG = "auxiliary_train"
# 99,842 train rows; the last 1,000 are held out for validation loss, never the test split
HUB_SPLITS = {"train": "train[:-1000]", "val": "train[-1000:]"}
LETTERS = "ABCDEFGHIJ"


def render_multiple_choice(question: str, choices: Sequence[str]) -> str:
    """The user prompt: question, lettered choices one per line, and the instruction."""
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"a multiple-choice question needs 2 to {len(LETTERS)} choices, got {len(choices)}")
    lines = [f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices, strict=False)]
    return f"{question.strip()}\n\n" + "\n".join(lines) + "\n\nAnswer with the letter of the correct choice."


def mmlu_conversation(row: Mapping[str, Any]) -> Conversation:
    """Convert an MMLU-schema row to a prompt and a one-letter answer."""
    if isinstance(row.get("train"), Mapping):  # auxiliary_train's wrapper
        row = row["train"]
    choices = list(row["choices"])
    answer = row["answer"]
    if not (isinstance(answer, int) and 0 <= answer < len(choices)):
        raise ValueError(f"MMLU row answer must index its {len(choices)} choices, got {answer!r}")
    return Conversation(
        (
            message("user", render_multiple_choice(row["question"], choices)),
            message("assistant", LETTERS[answer]),
        )
    )


def load_mmlu(split: str = "train", *, load: HubLoad | None = None, limit: int | None = None) -> RowTask:
    """MMLU auxiliary_train from the hub, or its held-out tail for `split="val"`."""
    rows = load_rows(load, HUB_PATH, HUB_CONFIG, HUB_SPLITS[check_split(split)])
    return RowTask("mmlu", rows, mmlu_conversation, limit=limit)
