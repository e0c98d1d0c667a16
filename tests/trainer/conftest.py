"""Fixtures for the trainer tests: a small parquet corpus and an artifact store with a tokenizer."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import sample_texts

TOKENIZER = "t"


def write_corpus(directory: Path, *, docs_per_shard: int = 120, shards: int = 2) -> Path:
    """shard_*.parquet and one val_*.parquet with a `text` column, several row groups each."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = sample_texts(n_docs=docs_per_shard * (shards + 1), seed=1)
    names = [f"shard_{i:05d}.parquet" for i in range(shards)] + ["val_00000.parquet"]
    for i, name in enumerate(names):
        chunk = texts[i * docs_per_shard : (i + 1) * docs_per_shard]
        pq.write_table(pa.table({"text": chunk}), directory / name, row_group_size=docs_per_shard // 2)
    return directory


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, tiny_tokenizer) -> Path:
    """An artifact store root holding the session's tiny tokenizer under the name "t"."""
    from chatforge.artifacts import ArtifactStore

    root = tmp_path_factory.mktemp("artifacts")
    tiny_tokenizer.save(ArtifactStore(root).tokenizer_path(TOKENIZER))
    return root


def tiny_config(stage: str, root: Path, corpus: Path, **changes):
    """A d1 model, vocab 512, 64-token rows, 4 micro-batches of 2 rows per step: seconds per run."""
    from chatforge.contracts.training import TrainConfig

    base = dict(
        stage=stage,
        run="r",
        artifacts_dir=str(root),
        tokenizer=TOKENIZER,
        corpus_dir=str(corpus),
        depth=1,
        sequence_len=64,
        device_batch_rows=2,
        total_batch_tokens=4 * 2 * 64,
        num_steps=8,
        unit_docs=16,
        task_rows=60,
        unit_conversations=8,
        log_every_steps=1,
        eval_every_steps=0,
        eval_batches=1,
        checkpoint_every_steps=4,
        keep_checkpoints=5,
    )
    base.update(changes)
    return TrainConfig(**base)
