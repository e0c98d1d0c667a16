"""Reading a pretraining corpus: parquet shards in FineWeb-Edu's schema.

A corpus directory holds

    <dir>/shard_00000.parquet ...   training shards
    <dir>/val_00000.parquet ...     validation shards

The same reader serves the bundled corpus (built by `chatforge data corpus`, see
`trainer.corpus_build`) and real FineWeb-Edu shards renamed to this pattern. Only the `text` column
is read here; the schema is the contract the builder writes to. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TRAIN_PREFIX = "shard_"
VAL_PREFIX = "val_"

# FineWeb-Edu's parquet schema, column for column.
SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("date", pa.string()),
        ("file_path", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
        ("token_count", pa.int64()),
        ("score", pa.float64()),
        ("int_score", pa.int64()),
    ]
)


def shard_name(split: str, index: int) -> str:
    """The file name of shard `index` of a split ("train" or "val"): 'shard_00003.parquet'."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return f"{TRAIN_PREFIX if split == 'train' else VAL_PREFIX}{index:05d}.parquet"


def train_shards(corpus_dir: str | Path) -> list[Path]:
    """The training shards of a corpus, in order."""
    return _shards(corpus_dir, TRAIN_PREFIX)


def val_shards(corpus_dir: str | Path) -> list[Path]:
    """The validation shards of a corpus, in order."""
    return _shards(corpus_dir, VAL_PREFIX)


def iter_texts(paths: Iterable[str | Path], *, batch_size: int = 1024) -> Iterator[str]:
    """Stream the text column of parquet shards, a batch within a row group at a time."""
    for path in paths:
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=batch_size, columns=["text"]):
                yield from batch.column(0).to_pylist()


def _shards(corpus_dir: str | Path, prefix: str) -> list[Path]:
    return sorted(Path(corpus_dir).glob(f"{prefix}[0-9][0-9][0-9][0-9][0-9].parquet"))
