"""The corpus reader: shard discovery by name, and the text column streamed in order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatforge.corpus import SCHEMA, iter_texts, shard_name, train_shards, val_shards


def _write(path, texts, row_group_size=2):
    rows = [{name: None for name in SCHEMA.names} | {"text": t} for t in texts]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path, row_group_size=row_group_size)


def test_shards_are_found_by_name_in_order(tmp_path):
    for name in (shard_name("train", 1), shard_name("train", 0), shard_name("val", 0)):
        _write(tmp_path / name, ["x"])
    (tmp_path / "shard_1.parquet").write_bytes(b"")  # not the 5-digit pattern: ignored
    (tmp_path / "manifest.json").write_text("{}")
    assert train_shards(tmp_path) == [tmp_path / "shard_00000.parquet", tmp_path / "shard_00001.parquet"]
    assert val_shards(tmp_path) == [tmp_path / "val_00000.parquet"]
    assert train_shards(tmp_path / "missing") == []
    with pytest.raises(ValueError, match="split"):
        shard_name("test", 0)


def test_iter_texts_streams_every_row_across_row_groups_and_files(tmp_path):
    _write(tmp_path / "a.parquet", [f"a{i}" for i in range(5)])
    _write(tmp_path / "b.parquet", ["b0"])
    texts = list(iter_texts([tmp_path / "a.parquet", tmp_path / "b.parquet"], batch_size=3))
    assert texts == ["a0", "a1", "a2", "a3", "a4", "b0"]
