"""The tokenizer stage: byte-level BPE trained on the corpus's training shards, saved by name.

One process is enough (the Rust trainer uses every core), so this stage runs where it is called
rather than as a Ray Train job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from chatforge.artifacts import ArtifactStore
from chatforge.contracts.training import TokenizerConfig
from chatforge.corpus import iter_texts, train_shards
from chatforge.tokenizer import Tokenizer

from ..data import DataError
from ..telemetry import progress_bar


def train_tokenizer(cfg: TokenizerConfig, *, redo: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train and save `<artifacts>/tokenizers/<name>/tokenizer.json`; kept as is unless `redo`."""
    store = ArtifactStore(Path(cfg.artifacts_dir).absolute())
    path = store.tokenizer_path(cfg.name)
    if path.is_file() and not redo:
        log(f"[{cfg.name}/tokenizer] exists at {path}; skipping (pass --redo to retrain)")
        return path
    shards = train_shards(cfg.corpus_dir)
    if not shards:
        raise DataError(
            f"no training shards (shard_*.parquet) in {cfg.corpus_dir}: "
            "build them with `chatforge data corpus --out <dir>` or pass --corpus-dir"
        )
    t0 = time.perf_counter()
    tok = Tokenizer.train(
        _counted(shards, cfg),
        cfg.vocab_size,
        doc_cap_chars=cfg.doc_cap_chars,
        max_chars=cfg.max_chars,
        name=cfg.name,
    )
    tok.save(path)
    sample = "The quick brown fox jumps over the lazy dog. 12345"
    ratio = len(sample.encode()) / len(tok.encode(sample))
    log(
        f"[{cfg.name}/tokenizer] vocab {tok.vocab_size} trained in {time.perf_counter() - t0:.1f}s "
        f"({ratio:.2f} bytes/token on a sample) -> {path}"
    )
    return path


def _counted(shards: list[Path], cfg: TokenizerConfig) -> Iterator[str]:
    """The shards' texts, with a bar of documents read (rate, ETA) and characters taken so far;
    the trainer stops pulling once it has `max_chars`."""
    import pyarrow.parquet as pq

    total = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)  # footers only: cheap
    chars = 0
    with progress_bar(desc=f"[{cfg.name}/tokenizer] reading", total=total, unit="doc") as bar:
        for text in iter_texts(shards):
            yield text
            chars += min(len(text), cfg.doc_cap_chars)
            bar.update(1)
            if bar.n % 1000 == 0:
                bar.set_postfix(chars=f"{chars / 1e6:.1f}M", refresh=False)
