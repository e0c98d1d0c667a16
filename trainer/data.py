"""Training data: sources of tokenized documents, best-fit packing into rows, per-rank slots.

The data of one step is `micro_batches_per_step` micro-batches. Each micro-batch position in the
step is a *slot* with its own stream of data: slot j reads the source's units j, j+G, j+2G, ...
(G = slots), packs each unit into rows on its own, and hands out `device_batch_rows` rows per
step. Rank r of W owns slots r, r+W, r+2W, ... So:

- each worker reads only its own units (row groups of its own shards, or its own conversations);
- the global batch of a step does not depend on how many workers share it, which is what makes
  1 worker and 2 workers give the same loss;
- the data position is one small `(unit draw, row)` pair per slot, saved in every checkpoint;
  a unit is packed independently of the others, so re-packing it after a restart gives the same
  rows and the stream continues exactly where it stopped.

Rows are `sequence_len + 1` tokens (inputs and shifted targets). In pretraining each document is
`<|bos|>` + its tokens, and packing is best fit (`pack_best_fit`): every row starts with `<|bos|>`
and is full, and little text is cropped. Conversations carry the chat
format's loss mask; a masked token's target is -1. SFT pads each conversation into its own row.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq
import torch

from chatforge.chat import ConversationTooLong, render_conversation
from chatforge.tokenizer import Tokenizer


@dataclass(frozen=True)
class Doc:
    """Token ids and, per id, whether the model is trained to produce it (None: all of them)."""

    ids: list[int]
    mask: list[int] | None = None


Row = tuple[list[int], list[int]]  # (ids, mask) of exactly row_len tokens


class Source(Protocol):
    """Numbered units of documents; unit i is the same on every call, run and rank."""

    def __len__(self) -> int: ...

    def unit(self, index: int) -> list[Doc]: ...


class DataError(ValueError):
    """Training data that cannot be read or is empty."""


# --- sources -----------------------------------------------------------------------------------


class ParquetSource:
    """Documents from the `text` column of parquet shards; a unit is `unit_docs` rows of one row group."""

    def __init__(self, paths: Sequence[str | Path], tokenizer: Tokenizer, *, unit_docs: int):
        if not paths:
            raise DataError("no parquet shards given")
        self.paths = [str(p) for p in paths]
        self.tokenizer = tokenizer
        self.units: list[tuple[int, int, int]] = []  # (file, row group, first row in the group)
        for f, path in enumerate(self.paths):
            try:
                meta = pq.ParquetFile(path).metadata
            except (OSError, pq.lib.ArrowException) as e:
                raise DataError(f"cannot read parquet shard {path}: {e}") from None
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                self.units.extend((f, g, start) for start in range(0, rows, unit_docs))
        if not self.units:
            raise DataError(f"the parquet shards {self.paths} hold no rows")
        self.unit_docs = unit_docs

    def __len__(self) -> int:
        return len(self.units)

    def unit(self, index: int) -> list[Doc]:
        f, g, start = self.units[index]
        texts = self._row_group(f, g)[start : start + self.unit_docs]
        bos = self.tokenizer.bos_id
        return [Doc([bos, *ids]) for ids in self.tokenizer.encode_batch(texts)]

    @functools.lru_cache(maxsize=2)  # noqa: B019 - a slot reads its units' row group several times
    def _row_group(self, f: int, g: int) -> list[str]:
        with pq.ParquetFile(self.paths[f]) as pf:
            return pf.read_row_group(g, columns=["text"]).column(0).to_pylist()


class ConversationSource:
    """Conversations of a task (or mixture), rendered with the chat format; `unit_size` per unit."""

    def __init__(self, conversations: Any, tokenizer: Tokenizer, *, unit_size: int, max_tokens: int):
        if len(conversations) == 0:
            raise DataError("the conversation task or mixture is empty")
        self.conversations = conversations
        self.tokenizer = tokenizer
        self.unit_size = unit_size
        self.max_tokens = max_tokens
        self.truncated = 0  # conversations cut to the context (counted, never silent)

    def __len__(self) -> int:
        return (len(self.conversations) + self.unit_size - 1) // self.unit_size

    def unit(self, index: int) -> list[Doc]:
        start = index * self.unit_size
        end = min(start + self.unit_size, len(self.conversations))
        docs = []
        for i in range(start, end):
            try:
                r = render_conversation(self.tokenizer, self.conversations[i], max_tokens=self.max_tokens)
            except ConversationTooLong:
                r = render_conversation(
                    self.tokenizer, self.conversations[i], max_tokens=self.max_tokens, truncate=True
                )
                self.truncated += 1
            docs.append(Doc(r.ids, r.mask))
        return docs


# --- packing -----------------------------------------------------------------------------------


def pack_best_fit(docs: Sequence[Doc], row_len: int, pad_id: int) -> list[Row]:
    """Pack documents into rows of `row_len` tokens by best fit; the last row is padded (masked).

    A document longer than a row is first cut into row-sized pieces, each after the first starting
    with the first document's `<|bos|>`, so no text is thrown away. Each row then takes the largest
    piece that fits the space left, until none fits; the shortest remaining piece is then cropped to
    fill the row exactly (the least text lost).
    """
    pieces = [p for d in docs for p in _split(d, row_len)]
    # sorted by length; ties keep document order so packing is deterministic
    pool = sorted((len(p.ids), i) for i, p in enumerate(pieces))
    rows: list[Row] = []
    while pool:
        ids: list[int] = []
        mask: list[int] = []
        space = row_len
        while pool and space > 0:
            k = bisect.bisect_right(pool, (space, len(pieces))) - 1
            _, i = pool.pop(max(k, 0))  # nothing fits (k < 0): crop the shortest
            p = pieces[i]
            take = min(space, len(p.ids))
            ids.extend(p.ids[:take])
            mask.extend(p.mask[:take] if p.mask is not None else [1] * take)
            space -= take
        rows.append(_pad(ids, mask, row_len, pad_id))
    return rows


def _split(doc: Doc, row_len: int) -> list[Doc]:
    if len(doc.ids) <= row_len or not doc.ids:
        return [doc] if doc.ids else []
    bos, n = doc.ids[0], row_len - 1
    pieces = [Doc(doc.ids[:row_len], None if doc.mask is None else doc.mask[:row_len])]
    for start in range(row_len, len(doc.ids), n):
        mask = None if doc.mask is None else [0, *doc.mask[start : start + n]]
        pieces.append(Doc([bos, *doc.ids[start : start + n]], mask))
    return pieces


def pack_padded(docs: Sequence[Doc], row_len: int, pad_id: int) -> list[Row]:
    """One document per row, cut to `row_len` and padded with masked tokens (SFT)."""
    rows = []
    for d in docs:
        mask = d.mask if d.mask is not None else [1] * len(d.ids)
        rows.append(_pad(d.ids[:row_len], mask[:row_len], row_len, pad_id))
    return rows


def _pad(ids: list[int], mask: list[int], row_len: int, pad_id: int) -> Row:
    n = row_len - len(ids)
    return ids + [pad_id] * n, mask + [0] * n


PACKERS = {"best_fit": pack_best_fit, "padded": pack_padded}


# --- slots, loaders and positions ----------------------------------------------------------------


class SlotStream:
    """The rows of one slot: units slot, slot+G, slot+2G, ... (mod the source), each packed alone.

    The position is (draws, row): how many units this slot has started and how many rows of the
    current one it has handed out. The first unit is draw 0.
    """

    def __init__(
        self, source: Source, slot: int, n_slots: int, row_len: int, pad_id: int, packer: str,
        position: tuple[int, int] = (0, 0),
    ):  # fmt: skip
        self.source, self.slot, self.n_slots = source, slot, n_slots
        self.row_len, self.pad_id, self.pack = row_len, pad_id, PACKERS[packer]
        self.draw, self.row = position
        self._rows: list[Row] | None = None

    def next_row(self) -> Row:
        while True:
            if self._rows is None:
                unit = (self.slot + self.draw * self.n_slots) % len(self.source)
                self._rows = self.pack(self.source.unit(unit), self.row_len, self.pad_id)
            if self.row < len(self._rows):
                self.row += 1
                return self._rows[self.row - 1]
            self.draw, self.row, self._rows = self.draw + 1, 0, None

    @property
    def position(self) -> tuple[int, int]:
        return (self.draw, self.row)

    @property
    def epoch(self) -> float:
        """Passes over the source this slot has made, counting units (not rows)."""
        return (self.slot + self.draw * self.n_slots) / len(self.source)


class StepLoader:
    """The micro-batches of one rank, step by step: (inputs, targets) of shape (rows, sequence_len)."""

    def __init__(
        self,
        source: Source,
        *,
        rank: int,
        world_size: int,
        n_slots: int,
        rows_per_micro: int,
        sequence_len: int,
        pad_id: int,
        packer: str = "best_fit",
        position: dict[str, Any] | None = None,
    ):
        if n_slots % world_size:
            raise DataError(f"{n_slots} data slots do not split over {world_size} workers")
        saved = (position or {}).get("slots", {})
        if saved and len(saved) != n_slots:
            raise DataError(
                f"the saved data position has {len(saved)} slots but this run uses {n_slots}: "
                "resume with the same --total-batch-tokens, --device-batch-rows and --sequence-len"
            )
        self.rows_per_micro = rows_per_micro
        self.streams = [
            SlotStream(source, s, n_slots, sequence_len + 1, pad_id, packer, tuple(saved.get(str(s), (0, 0))))
            for s in range(rank, n_slots, world_size)
        ]

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches of the next step, one per owned slot, in slot order."""
        return [self._micro_batch(stream) for stream in self.streams]

    def _micro_batch(self, stream: SlotStream) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [stream.next_row() for _ in range(self.rows_per_micro)]
        ids = torch.tensor([r[0] for r in rows], dtype=torch.long)
        mask = torch.tensor([r[1] for r in rows], dtype=torch.bool)
        targets = ids[:, 1:].masked_fill(~mask[:, 1:], -1)
        return ids[:, :-1].contiguous(), targets.contiguous()

    def position(self) -> dict[str, Any]:
        """This rank's slots; merge every rank's with `merge_positions` for the checkpoint."""
        return {"slots": {str(s.slot): list(s.position) for s in self.streams}}

    @property
    def epoch(self) -> float:
        return min(s.epoch for s in self.streams)


def merge_positions(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One data position from every rank's part (slots are disjoint between ranks)."""
    slots: dict[str, list[int]] = {}
    for part in parts:
        slots.update(part["slots"])
    return {"slots": dict(sorted(slots.items(), key=lambda kv: int(kv[0])))}
