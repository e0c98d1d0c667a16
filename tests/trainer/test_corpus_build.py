"""The bundled corpus builder's pure parts: cleaning, splitting, shards in FineWeb-Edu's schema."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from chatforge import corpus
from chatforge.corpus import SCHEMA, iter_texts
from trainer import corpus_build
from trainer.corpus_build import (
    DOC_MAX_CHARS,
    DOC_MIN_CHARS,
    MIN_DOC_CHARS,
    CorpusError,
    Document,
    clean_text,
    shuffle_and_cap,
    split_documents,
    strip_gutenberg,
    strip_rest,
    write_shards,
)


def test_gutenberg_header_and_licence_are_removed():
    text = (
        "The Project Gutenberg EBook of Hamlet\nlicence words\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\n"
        "To be, or not to be: that is the question.\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore licence\n"
    )
    assert strip_gutenberg(text).strip() == "To be, or not to be: that is the question."
    assert strip_gutenberg("no markers at all") == "no markers at all"


def test_rest_markup_becomes_prose():
    text = (
        ".. index:: single: frobnicate\n\n"
        "Title\n=====\n\n"
        "Call :func:`frobnicate` with ``x=1``, see :ref:`the guide <guide>`.\n\n"
        ".. versionadded:: 3.11\n\n"
        ".. note::\n\n   Frobnicating is idempotent.\n"
    )
    out = clean_text(text, "rest")
    assert "index::" not in out and "=====" not in out
    assert "`frobnicate()`" in out and "x=1" in out and ":func:" not in out
    assert "New in version 3.11." in out
    assert "Note:" in out and "Frobnicating is idempotent." in out
    assert strip_rest("plain words") == "plain words"


def test_clean_text_normalises_and_rejects_unknown_markup():
    assert clean_text("a\r\nb\x00c  \n\n\n\nd") == "a\nbc\n\nd"
    with pytest.raises(CorpusError, match="unknown markup"):
        clean_text("x", "html")


def test_split_documents_respects_sizes():
    paragraph = "This sentence is about whales and the sea. " * 40  # ~1.7k chars
    text = "\n\n".join([paragraph] * 20) + "\n\nshort tail"
    docs = split_documents(text)
    assert len(docs) > 1
    # a short tail (under DOC_MIN_CHARS) joins the document before it, which may then pass the cap
    assert all(MIN_DOC_CHARS <= len(d) <= DOC_MAX_CHARS + DOC_MIN_CHARS for d in docs)
    assert "short tail" in docs[-1]  # a short tail joins the document before it
    huge = "word " * 5000  # one paragraph over the cap gets cut at spaces
    pieces = split_documents(huge)
    assert len(pieces) == 3 and all(len(d) <= DOC_MAX_CHARS + DOC_MIN_CHARS for d in pieces)
    assert " ".join(pieces).split() == huge.split()  # nothing lost


def _doc(i: int, text: str | None = None) -> Document:
    return Document(
        text or f"document {i} " * 50,
        "test",
        f"pkg:pypi/x@1#f{i}",
        f"x.tar.gz!f{i}",
        "2026-01-01T00:00:00Z",
        0,
    )


def test_shuffle_and_cap_dedupes_and_caps():
    docs = [_doc(i) for i in range(50)] + [_doc(99, _doc(3).text)]
    kept = shuffle_and_cap(docs, max_bytes=10_000)
    assert sum(d.nbytes for d in kept) <= 10_000
    assert len({d.text for d in kept}) == len(kept)
    assert [d.url for d in kept] == [d.url for d in shuffle_and_cap(docs, max_bytes=10_000)]  # seeded


def test_shards_have_fineweb_schema_and_validation_split(tmp_path):
    docs = [_doc(i) for i in range(40)]
    entries = write_shards(
        docs, tmp_path, shard_bytes=sum(d.nbytes for d in docs) // 4, val_shards=1, log=lambda _: None
    )
    assert [e["split"] for e in entries] == ["train"] * (len(entries) - 1) + ["val"]
    assert corpus.val_shards(tmp_path) == [tmp_path / "val_00000.parquet"]
    table = pq.read_table(corpus.train_shards(tmp_path)[0])
    assert table.schema.equals(SCHEMA)
    texts = list(iter_texts(corpus.train_shards(tmp_path) + corpus.val_shards(tmp_path)))
    assert texts == [d.text for d in docs]  # every document once, in order
    # the real loader reads them as it would read FineWeb-Edu
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=[str(p) for p in corpus.train_shards(tmp_path)], split="train")
    assert ds.column_names == SCHEMA.names and ds[0]["text"] == docs[0].text


def test_unknown_source_is_an_error():
    with pytest.raises(CorpusError, match="unknown corpus source"):
        corpus_build.select_sources(["nope"])
