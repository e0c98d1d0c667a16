"""Packing, slots and data positions (trainer.data)."""

from __future__ import annotations

import torch

from trainer.data import Doc, ParquetSource, StepLoader, merge_positions, pack_best_fit, pack_padded

BOS = 0


class ListSource:
    """Units of documents given as lists of lengths; token values encode (unit, doc, position)."""

    def __init__(self, units: list[list[int]]):
        self.units = units

    def __len__(self) -> int:
        return len(self.units)

    def unit(self, index: int) -> list[Doc]:
        return [
            Doc([BOS] + [1000 * index + 10 * d + t + 1 for t in range(n - 1)])
            for d, n in enumerate(self.units[index])
        ]


def test_best_fit_fills_rows_with_the_largest_document_that_fits():
    docs = [Doc([BOS] + [1] * (n - 1)) for n in (5, 3, 2, 4)]
    rows = pack_best_fit(docs, row_len=5, pad_id=BOS)
    lengths = [[len(r[0])] for r in rows]
    assert lengths == [[5]] * len(rows)
    # 5 alone; then 4 (largest that fits 5) and, as nothing fits the last token, the shortest (2)
    # cropped to 1; then 3 alone, padded (masked)
    assert len(rows) == 3
    assert rows[0][1] == [1] * 5
    assert rows[2][1] == [1, 1, 1, 0, 0]
    assert all(r[0][0] == BOS for r in rows)


def test_best_fit_every_row_starts_with_bos_and_keeps_most_tokens():
    lengths = [7, 30, 12, 65, 3, 18, 9, 40, 22, 5, 16, 11]
    docs = [Doc([BOS] + [1] * (n - 1)) for n in lengths]
    rows = pack_best_fit(docs, row_len=33, pad_id=BOS)
    assert all(r[0][0] == BOS and len(r[0]) == 33 for r in rows)
    kept = sum(sum(m) for _, m in rows)
    assert kept >= 0.95 * sum(lengths)  # long documents are split, not cropped; little is lost
    assert sum(m.count(0) for _, m in rows[:-1]) == 0  # only the last row is padded


def test_padded_packing_masks_padding_and_crops_long_documents():
    rows = pack_padded([Doc([BOS, 5, 6], [0, 1, 1]), Doc([BOS] + [7] * 9)], row_len=4, pad_id=BOS)
    assert rows[0] == ([BOS, 5, 6, BOS], [0, 1, 1, 0])
    assert rows[1] == ([BOS, 7, 7, 7], [1, 1, 1, 1])


def loader(source, rank, world, position=None, slots=4):
    return StepLoader(
        source, rank=rank, world_size=world, n_slots=slots, rows_per_micro=2, sequence_len=7,
        pad_id=BOS, position=position,
    )  # fmt: skip


SOURCE = ListSource([[8, 5, 3, 8], [4, 4, 8], [8, 8], [6, 2, 8, 3], [8], [5, 3, 8]])


def test_global_batch_does_not_depend_on_the_number_of_workers():
    one = loader(SOURCE, 0, 1)
    two = [loader(SOURCE, r, 2) for r in range(2)]
    for _ in range(5):
        alone = one.next_step()
        ranks = [two[0].next_step(), two[1].next_step()]
        shared = [ranks[s % 2][s // 2] for s in range(4)]  # slot s lives on rank s % 2
        for (x1, y1), (x2, y2) in zip(alone, shared, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_each_rank_reads_only_its_own_units():
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for r in range(2):
        ld = loader(SOURCE, r, 2)
        for _ in range(6):
            for x, _ in ld.next_step():
                seen[r] |= {int(t) // 1000 for t in x.flatten() if t != BOS}
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_a_saved_position_resumes_the_exact_stream():
    ld = loader(SOURCE, 0, 1)
    for _ in range(3):
        ld.next_step()
    position = merge_positions([ld.position()])
    expected = [ld.next_step() for _ in range(4)]
    # resume with a different worker count: positions are per slot, not per rank
    parts = [loader(SOURCE, r, 2, position) for r in range(2)]
    for step in expected:
        got = [parts[0].next_step(), parts[1].next_step()]
        for s, (x, y) in enumerate(step):
            assert torch.equal(x, got[s % 2][s // 2][0]) and torch.equal(y, got[s % 2][s // 2][1])


def test_targets_are_shifted_inputs_and_masked_positions_are_minus_one():
    source = ListSource([[8]])
    x, y = loader(source, 0, 1, slots=1).next_step()[0]
    assert torch.equal(x[0, 1:], y[0, :-1])
    masked = StepLoader(
        type("S", (), {"__len__": lambda s: 1, "unit": lambda s, i: [Doc([BOS, 1, 2, 3], [0, 0, 1, 0])]})(),
        rank=0, world_size=1, n_slots=1, rows_per_micro=1, sequence_len=3, pad_id=BOS,
    )  # fmt: skip
    _, y = masked.next_step()[0]
    assert y.tolist() == [[-1, 2, -1]]


def test_parquet_source_splits_row_groups_into_units_with_bos(corpus_dir, tiny_tokenizer):
    from chatforge.corpus import train_shards

    source = ParquetSource(train_shards(corpus_dir), tiny_tokenizer, unit_docs=16)
    # 2 shards x 2 row groups of 60 docs -> 4 units per row group
    assert len(source) == 2 * 2 * 4
    docs = source.unit(5)
    assert len(docs) == 16 and all(d.ids[0] == tiny_tokenizer.bos_id for d in docs)
    assert source.unit(5) == docs  # deterministic
