"""Base pretraining: next-token prediction on web-text shards, documents packed into full rows."""

from __future__ import annotations

from chatforge.contracts.training import TrainConfig
from chatforge.corpus import train_shards, val_shards
from chatforge.tokenizer import Tokenizer

from ..data import DataError, ParquetSource
from . import StageData

SAMPLE_PROMPTS = (
    "The capital of France is",
    "The meaning of life is",
    "def fibonacci(n):",
    "Once upon a time",
)


def data(cfg: TrainConfig, tokenizer: Tokenizer) -> StageData:
    train, val = train_shards(cfg.corpus_dir), val_shards(cfg.corpus_dir)
    if not train or not val:
        raise DataError(
            f"{cfg.corpus_dir} needs shard_*.parquet and val_*.parquet files: "
            "build it with `chatforge data corpus --out <dir>` or pass --corpus-dir"
        )
    train_source = ParquetSource(train, tokenizer, unit_docs=cfg.unit_docs)
    return StageData(
        train=train_source,
        val=ParquetSource(val, tokenizer, unit_docs=cfg.unit_docs),
        packer="best_fit",
        approx_tokens=0,  # base training length comes from the token budget instead
        sample_prompts=[[tokenizer.bos_id, *tokenizer.encode(p)] for p in SAMPLE_PROMPTS],
    )
