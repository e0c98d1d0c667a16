"""The task mixtures of midtraining and SFT, from the hub or from the offline generators.

Weights count epochs (see `TaskMixture`). Midtraining teaches the chat format, multiple choice and
tool use on lots of data; SFT is a short pass over a cleaner, smaller mix, as in nanochat. Both
use only train splits (validation holds out rows of train), never an evaluation test split.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from chatforge.chat import Conversation

from ..identity import Identity, default_identity
from .base import RowTask, Task, TaskMixture, generated_task
from .generated import SYSTEM_PROMPTS, gsm8k_row, identity_row, instruction_row, mmlu_row
from .gsm8k import gsm8k_conversation, load_gsm8k
from .hub import check_split
from .mmlu import load_mmlu, mmlu_conversation
from .smoltalk import load_smoltalk, smoltalk_conversation


class TaskSpec(NamedTuple):
    name: str
    load: Callable[..., RowTask] | None  # the hub loader; None: always generated
    make_row: Callable[..., dict[str, Any]]  # the offline generator, in the hub rows' schema
    convert: Callable[..., Conversation]
    mid_weight: float  # epochs of the task per mixture (see TaskMixture)
    sft_weight: float


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("smoltalk", load_smoltalk, instruction_row, smoltalk_conversation, 1.0, 1.0),
    TaskSpec("mmlu", load_mmlu, mmlu_row, mmlu_conversation, 1.0, 0.5),
    TaskSpec("gsm8k", load_gsm8k, gsm8k_row, gsm8k_conversation, 1.0, 1.0),
    TaskSpec("identity", None, identity_row, smoltalk_conversation, 0.5, 0.5),
)


def mixture(
    stage: str, split: str, *, source: str = "offline", rows: int = 2000, seed: int = 0,
    identity: Identity | None = None,
) -> TaskMixture:  # fmt: skip
    """The `stage` ("mid" or "sft") mixture of `split` ("train" or "val").

    offline: `rows` generated rows per task (a tenth of that for val, from another seed stream).
    hub: the real datasets, capped at `rows` per task when `rows` > 0; identity stays generated.
    `identity` (default: `trainer/identity.yaml`) makes the identity task's conversations and one
    of the generated instructions' system prompts.
    """
    if stage not in ("mid", "sft"):
        raise ValueError(f"no task mixture for stage {stage!r}: expected 'mid' or 'sft'")
    check_split(split)
    if source not in ("offline", "hub"):
        raise ValueError(f"task source must be 'offline' or 'hub', got {source!r}")
    generated = rows or 1000  # generated tasks need a size even when hub tasks are uncapped (rows=0)
    size = generated if split == "train" else max(1, generated // 10)
    who = identity or default_identity()
    makers: dict[str, Callable[..., dict[str, Any]]] = {
        "identity": partial(identity_row, identity=who),
        "smoltalk": partial(instruction_row, system_prompts=(*SYSTEM_PROMPTS, who.system_prompt)),
    }
    entries: list[tuple[Task, float]] = []
    for spec in TASKS:
        if source == "hub" and spec.load is not None:
            task: Task = spec.load(split, limit=rows or None)
        else:
            make_row = makers.get(spec.name, spec.make_row)
            task = generated_task(spec.name, make_row, spec.convert, size, split=split, seed=seed)
        entries.append((task, spec.mid_weight if stage == "mid" else spec.sft_weight))
    return TaskMixture(entries, seed=seed)
