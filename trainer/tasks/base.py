"""Tasks and mixtures: deterministic, indexable lists of conversations.

A Task is a list of Conversations that can be read in any order: `task[i]` is the same
conversation on every call, every run and every rank, so a data position saved in a checkpoint
means the same thing after a restart. Most tasks are a `RowTask`: rows in a source dataset's own
schema (a Hugging Face dataset, or rows the project generates in that same schema) and the
converter that turns one row into a Conversation. Real and generated data therefore go through
the same converters.

A TaskMixture interleaves tasks by weight, where a weight counts epochs: 2.0 repeats every row
twice, 0.5 takes a fixed half of the rows. The order is one seeded shuffle, fixed at construction.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from chatforge.chat import Conversation

Row = Mapping[str, Any]
RowMaker = Callable[[random.Random], dict[str, Any]]


class Task(ABC):
    """An indexable, deterministic list of Conversations."""

    name: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, i: int) -> Conversation: ...

    def __iter__(self) -> Iterator[Conversation]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, rows={len(self)})"


class RowTask(Task):
    """Rows in a dataset's own schema, converted to Conversations when read.

    `rows` is anything with `len` and integer indexing that returns a mapping: a `datasets.Dataset`,
    a list of dicts, or `GeneratedRows`. `limit` keeps only the first rows (for tiny runs).
    """

    def __init__(
        self,
        name: str,
        rows: Sequence[Row],
        convert: Callable[[Row], Conversation],
        *,
        limit: int | None = None,
    ):
        if limit is not None and limit < 0:
            raise ValueError(f"task {name!r}: limit must be >= 0, got {limit}")
        self.name = name
        self.rows = rows
        self.convert = convert
        self._len = len(rows) if limit is None else min(limit, len(rows))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> Conversation:
        if not 0 <= i < self._len:
            raise IndexError(f"task {self.name!r}: index {i} out of range for {self._len} rows")
        return self.convert(self.rows[i])


class GeneratedRows(Sequence[dict[str, Any]]):
    """`size` rows made on demand: row i is `make_row(rng)` with an rng seeded by (stream, i).

    The seed is a string, which `random.Random` hashes with SHA-512, so row i is the same on every
    platform and Python version and does not depend on the rows read before it.
    """

    def __init__(self, make_row: RowMaker, size: int, *, stream: str):
        if size < 0:
            raise ValueError(f"generated rows {stream!r}: size must be >= 0, got {size}")
        self.make_row = make_row
        self.size = size
        self.stream = stream

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if not 0 <= i < self.size:
            raise IndexError(f"generated rows {self.stream!r}: index {i} out of range for {self.size} rows")
        return self.make_row(random.Random(f"{self.stream}/{i}"))


def generated_task(
    name: str, make_row: RowMaker, convert: Callable[[Row], Conversation], size: int, *, split: str, seed: int
) -> RowTask:
    """A task of generated rows; train and val draw from different seed streams."""
    return RowTask(name, GeneratedRows(make_row, size, stream=f"{name}/{split}/{seed}"), convert)


class TaskMixture:
    """Tasks interleaved by weight (in epochs) in one deterministic shuffle.

    With weight w a task of n rows contributes floor(w) full passes plus round(frac(w) * n) rows
    sampled without replacement, so 2.0 repeats every row twice and 0.5 takes a fixed half.
    """

    def __init__(self, entries: Sequence[tuple[Task, float]], *, seed: int = 0):
        if not entries:
            raise ValueError("a task mixture needs at least one (task, weight) entry")
        for task, weight in entries:
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"task {task.name!r}: weight must be a finite number >= 0, got {weight}")
        self.entries = [(task, float(weight)) for task, weight in entries]
        self.seed = seed
        rng = random.Random(seed)
        n_tasks = len(self.entries)
        codes: list[int] = []
        self._samples: list[int] = []
        for t, (task, weight) in enumerate(self.entries):
            n = len(task)
            passes, frac = divmod(weight, 1.0)
            rows = list(range(n)) * int(passes) + sorted(rng.sample(range(n), round(frac * n)))
            self._samples.append(len(rows))
            # one int per sample keeps a 600k-row hub mixture at a few MB instead of a list of tuples
            codes.extend(row * n_tasks + t for row in rows)
        rng.shuffle(codes)
        self._codes = array("q", codes)
        self._n_tasks = n_tasks

    def __len__(self) -> int:
        return len(self._codes)

    def __getitem__(self, i: int) -> Conversation:
        if not 0 <= i < len(self._codes):
            raise IndexError(f"mixture index {i} out of range for {len(self._codes)} conversations")
        row, t = divmod(self._codes[i], self._n_tasks)
        return self.entries[t][0][row]

    def __iter__(self) -> Iterator[Conversation]:
        for i in range(len(self)):
            yield self[i]

    def task_of(self, i: int) -> str:
        """The name of the task that mixture row i comes from (for logging and tests)."""
        return self.entries[self._codes[i] % self._n_tasks][0].name

    def describe(self) -> list[dict[str, Any]]:
        """One entry per task: its name, rows, weight, samples in the mixture and share of them."""
        total = max(1, len(self))
        return [
            {"name": task.name, "rows": len(task), "weight": weight, "samples": s, "share": s / total}
            for (task, weight), s in zip(self.entries, self._samples, strict=True)
        ]
