"""`chatforge data convert`: a user's files become a corpus the stages read (FineWeb-Edu schema)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chatforge.cli import main
from chatforge.corpus import SCHEMA, iter_texts, train_shards, val_shards
from trainer.corpus_convert import ConvertError, convert_corpus


def _inputs(root):
    (root / "notes" / "deep").mkdir(parents=True)
    (root / "notes" / "a.txt").write_text("First note about gardens.\n")
    (root / "notes" / "deep" / "b.md").write_text("# Bees\n\nBees visit flowers.\n")
    (root / "notes" / "skip.pdf").write_bytes(b"%PDF")  # not a text format: left out
    (root / "lines.jsonl").write_text(
        json.dumps({"text": "A line document."}) + "\n\n" + json.dumps("A bare string.") + "\n"
    )
    pq.write_table(
        pa.table({"text": ["Parquet one.", "Parquet two."], "url": ["u1", "u2"]}), root / "web.parquet"
    )
    return root


def test_every_input_kind_becomes_one_corpus(tmp_path):
    import datasets

    src = _inputs(tmp_path / "in")
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["Saved train doc."]}),
        "test": datasets.Dataset.from_dict({"text": ["Saved test doc."]}),
    }).save_to_disk(str(src / "saved"))  # fmt: skip
    long = "\n\n".join(
        f"Paragraph {i} " + "word " * 300 for i in range(20)
    )  # ~30k chars: split at paragraphs
    (src / "long.txt").write_text(long)
    out = tmp_path / "corpus"
    manifest = convert_corpus([src], out, val_fraction=0.2)
    texts = list(iter_texts(train_shards(out))) + list(iter_texts(val_shards(out)))
    short = {"First note about gardens.", "# Bees\n\nBees visit flowers.", "A line document.", "A bare string.",
             "Parquet one.", "Parquet two.", "Saved train doc.", "Saved test doc."}  # fmt: skip
    assert short <= set(texts)
    pieces = [t for t in texts if t.startswith("Paragraph")]
    assert len(pieces) > 1 and sum(len(p) for p in pieces) >= len(long) - 2 * len(pieces)
    assert len(texts) == manifest["totals"]["docs"] == len(short) + len(pieces)
    assert len(list(iter_texts(val_shards(out)))) == round(len(texts) * 0.2)
    for shard in [*train_shards(out), *val_shards(out)]:
        assert pq.read_schema(shard).remove_metadata() == SCHEMA
    assert not any(i.endswith(("skip.pdf", ".arrow")) for i in manifest["inputs"])


def test_the_converted_corpus_feeds_the_tokenizer_and_base_stages(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CHATFORGE_PROGRESS", "1")
    src = _inputs(tmp_path / "in")
    out = tmp_path / "corpus"
    assert (
        main(["data", "convert", "--in", str(src / "notes"), str(src / "lines.jsonl"), "--out", str(out)])
        == 0
    )
    out_err = capsys.readouterr()
    assert "4 documents (3 train, 1 validation)" in out_err.out
    assert "corpus: reading: 100%" in out_err.err and "file/s" in out_err.err  # a bar with its rate
    assert main(["train", "tokenizer", "--artifacts", str(tmp_path / "a"), "--run", "mine",
                 "--corpus-dir", str(out), "--vocab-size", "300"]) == 0  # fmt: skip
    assert (tmp_path / "a" / "tokenizers" / "mine" / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: (d / "x.jsonl").write_text("{not json}\n"), "x.jsonl:1: not JSON"),
        (lambda d: (d / "x.jsonl").write_text('{"body": "no text"}\n'), 'an object with a "text" string'),
        (lambda d: pq.write_table(pa.table({"body": ["a", "b"]}), d / "x.parquet"), "no `text` column"),
        (lambda d: (d / "only.txt").write_text("one document"), "a corpus needs at least 2"),
        (lambda d: (d / "x.pdf").write_text("?"), "no .txt, .md, .jsonl, .parquet file"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, setup, message):
    src = tmp_path / "in"
    src.mkdir()
    setup(src)
    with pytest.raises(ConvertError, match=message.replace("(", r"\(").replace("[", r"\[")):
        convert_corpus([src], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_refuses_to_overwrite_and_names_missing_inputs(tmp_path, capsys):
    src = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "convert", "--in", str(src), "--out", str(out)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["data", "convert", "--in", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert (
        main(["data", "convert", "--in", str(src), "--out", str(tmp_path / "o3"), "--val-fraction", "1.5"])
        == 1
    )
    assert "--val-fraction must be between 0 and 1" in capsys.readouterr().err
