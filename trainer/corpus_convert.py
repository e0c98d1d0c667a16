"""`chatforge data convert`: your own documents as a pretraining corpus (FineWeb-Edu's schema).

The stages read one corpus layout (`chatforge.corpus`: `shard_*.parquet` and `val_*.parquet` in
FineWeb-Edu's schema). This turns what a user has into it:

- plain text and Markdown files (`.txt`, `.md`): one document per file, a long file packed into
  documents at paragraph ends (the bundled corpus's rule, `corpus_build.split_documents`);
- JSON Lines (`.jsonl`): one document per line, its `text` field (or the line itself when it is a
  JSON string);
- parquet files with a `text` column (FineWeb, FineWeb-Edu or any dump in that schema);
- a `datasets` directory written by `Dataset.save_to_disk` (its `text` column; every split of a
  `DatasetDict`).

Inputs are files or directories (searched recursively, in name order). Documents are shuffled with
a fixed seed, a share is held out for validation, and both splits are written as zstd parquet
shards, with a manifest of what went in. Torch-free; pyarrow and datasets are imported when used.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".parquet")
DUMP = "chatforge-local"
SEED = 1234
MAX_LINE_BYTES = 64 << 20  # one JSON Lines record; a longer "line" is a file that is not JSON Lines


class ConvertError(ValueError):
    """Input that cannot become a corpus; the message names the file and what to change."""


def convert_corpus(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    val_fraction: float = 0.05,
    shard_mb: float = 100.0,
    min_chars: int = 1,
    log: Any = print,
) -> dict[str, Any]:
    """Write the documents of `inputs` as a corpus in `out_dir`; returns the manifest."""
    from .corpus_build import ROW_GROUP_DOCS

    if not 0 < val_fraction < 1:
        raise ConvertError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if shard_mb <= 0:
        raise ConvertError(f"--shard-mb must be positive, got {shard_mb}")
    out = Path(out_dir).absolute()
    if out.exists() and any(out.iterdir()):
        raise ConvertError(f"{out} is not empty: choose a new --out (converting never overwrites)")
    sources = find_inputs(inputs)
    t0 = time.monotonic()
    docs: list[dict[str, Any]] = []
    from .telemetry import progress_bar

    for path in progress_bar(sources, desc="corpus: reading", unit="file"):
        docs.extend(d for d in read_documents(path) if len(d["text"].strip()) >= min_chars)
    if len(docs) < 2:
        raise ConvertError(
            f"{len(docs)} document(s) found in {', '.join(map(str, inputs))}: a corpus needs at least 2 "
            "(one to train on, one to validate with)"
        )
    random.Random(SEED).shuffle(docs)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    splits = {"val": docs[:n_val], "train": docs[n_val:]}
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for split in ("train", "val"):
        shards += _write_split(splits[split], split, out, int(shard_mb * 1e6), ROW_GROUP_DOCS)
    manifest = {
        "schema": "fineweb-edu",
        "converted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "inputs": [str(p) for p in sources],
        "val_fraction": val_fraction,
        "seed": SEED,
        "shards": shards,
        "totals": {"docs": len(docs), "bytes": sum(s["bytes"] for s in shards)},
    }
    total_bytes = sum(s["bytes"] for s in shards)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(
        f"corpus: {len(docs)} documents ({len(splits['train'])} train, {n_val} validation), "
        f"{total_bytes / 1e6:.1f} MB of text from {len(sources)} file(s) -> {out} "
        f"in {time.monotonic() - t0:.1f}s"
    )
    return manifest


def find_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """The files (and `datasets` directories) to read, in a stable order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise ConvertError(f"--in {path}: no such file or directory")
        if path.is_dir() and _is_dataset_dir(path):
            found.append(path)
        elif path.is_dir():
            found += _walk(path)
        elif path.suffix.lower() in SUFFIXES:
            found.append(path)
        else:
            raise ConvertError(f"--in {path}: not a {', '.join(SUFFIXES)} file or a `datasets` directory")
    if not found:
        raise ConvertError(
            f"no {', '.join(SUFFIXES)} file or `datasets` directory in {', '.join(map(str, inputs))}"
        )
    return found


def read_documents(path: Path) -> Iterator[dict[str, Any]]:
    """The documents of one input, each a row of the corpus (text plus provenance)."""
    stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    url = path.absolute().as_uri()
    suffix = path.suffix.lower()
    if path.is_dir():
        texts: Iterator[str] = _dataset_texts(path)
    elif suffix in TEXT_SUFFIXES:
        texts = _file_texts(path)
    elif suffix == ".jsonl":
        texts = _jsonl_texts(path)
    else:
        texts = _parquet_texts(path)
    for part, text in enumerate(texts):
        yield _row(text, url=url, part=part, file_path=str(path), date=stamp)


# --- readers ------------------------------------------------------------------------------------


def _file_texts(path: Path) -> Iterator[str]:
    from .corpus_build import DOC_MAX_CHARS, split_documents

    text = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n").strip()
    if len(text) <= DOC_MAX_CHARS:
        yield text
    else:
        yield from split_documents(text)


def _jsonl_texts(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
            if len(raw) > MAX_LINE_BYTES:
                raise ConvertError(f"{path}:{n}: a line over {MAX_LINE_BYTES >> 20} MiB: is this JSON Lines?")
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except ValueError as e:
                raise ConvertError(f"{path}:{n}: not JSON ({e})") from None
            if isinstance(record, str):
                yield record
            elif isinstance(record, dict) and isinstance(record.get("text"), str):
                yield record["text"]
            else:
                raise ConvertError(f'{path}:{n}: expected a JSON string or an object with a "text" string')


def _parquet_texts(path: Path) -> Iterator[str]:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        if "text" not in pf.schema_arrow.names:
            raise ConvertError(f"{path}: no `text` column (columns: {', '.join(pf.schema_arrow.names)})")
        for batch in pf.iter_batches(batch_size=1024, columns=["text"]):
            yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))


def _dataset_texts(path: Path) -> Iterator[str]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    parts = list(loaded.values()) if isinstance(loaded, datasets.DatasetDict) else [loaded]
    for part in parts:
        if "text" not in part.column_names:
            raise ConvertError(f"{path}: no `text` column (columns: {', '.join(part.column_names)})")
        for batch in part.iter(batch_size=1024):
            yield from (t for t in batch["text"] if isinstance(t, str))


def _is_dataset_dir(path: Path) -> bool:
    """A `save_to_disk` directory: a Dataset (state.json) or a DatasetDict (dataset_dict.json)."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def _walk(directory: Path) -> list[Path]:
    """Readable files under `directory`, in name order; a `datasets` directory is one input."""
    found: list[Path] = []
    for p in sorted(directory.iterdir()):
        if p.is_dir():
            found += [p] if _is_dataset_dir(p) else _walk(p)
        elif p.is_file() and p.suffix.lower() in SUFFIXES:
            found.append(p)
    return found


# --- writing ------------------------------------------------------------------------------------


def _row(text: str, *, url: str, part: int, file_path: str, date: str) -> dict[str, Any]:
    import uuid

    return {
        "text": text,
        "id": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{url}?part={part}')}>",
        "dump": DUMP,
        "url": url,
        "date": date,
        "file_path": file_path,
        "language": None,  # not detected: no classifier runs here
        "language_score": None,
        "token_count": len(text.split()),
        "score": None,  # not scored: FineWeb-Edu's classifier does not run here
        "int_score": None,
    }


def _write_split(
    docs: list[dict[str, Any]], split: str, out: Path, shard_bytes: int, row_group_docs: int
) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from chatforge.corpus import SCHEMA, shard_name

    from .telemetry import progress_bar

    total = sum(len(d["text"].encode("utf-8")) for d in docs)
    n = max(1, min(len(docs), math.ceil(total / shard_bytes)))
    size = math.ceil(len(docs) / n)
    entries = []
    for k in progress_bar(range(n), desc=f"corpus: writing {split}", unit="shard"):
        group = docs[k * size : (k + 1) * size]
        if not group:
            break
        name = shard_name(split, k)
        pq.write_table(pa.Table.from_pylist(group, schema=SCHEMA), out / name,
                       row_group_size=row_group_docs, compression="zstd")  # fmt: skip
        entries.append({"file": name, "split": split, "docs": len(group),
                        "bytes": sum(len(d["text"].encode("utf-8")) for d in group)})  # fmt: skip
    return entries


# --- command line -------------------------------------------------------------------------------


def add_cli(data_sub: argparse._SubParsersAction) -> None:
    """Register `chatforge data convert` under `chatforge data`."""
    p = data_sub.add_parser(
        "convert",
        help="turn your own .txt/.md/.jsonl/.parquet files or a `datasets` directory into a corpus",
    )
    p.add_argument("--in", dest="inputs", nargs="+", required=True, metavar="PATH",
                   help="files or directories (searched recursively)")  # fmt: skip
    p.add_argument("--out", required=True, help="a new, empty directory for the corpus")
    p.add_argument("--val-fraction", type=float, default=0.05, help="documents held out (default: 0.05)")
    p.add_argument("--shard-mb", type=float, default=100.0, help="text per shard, in MB (default: 100)")
    p.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this (default: 1)")
    p.set_defaults(func=_cli_convert)


def _cli_convert(args: argparse.Namespace) -> int:
    try:
        convert_corpus(args.inputs, args.out, val_fraction=args.val_fraction, shard_mb=args.shard_mb,
                       min_chars=args.min_chars)  # fmt: skip
    except (ConvertError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
