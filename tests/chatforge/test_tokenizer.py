from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.tokenizer import SPECIAL_TOKENS, Tokenizer, TokenizerError
from tests.conftest import sample_texts


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_arbitrary_unicode(tiny_tokenizer, text):
    # Lone surrogates cannot be UTF-8 encoded; everything else must round-trip exactly.
    text = text.encode("utf-8", errors="ignore").decode("utf-8")
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.decode(ids) == text
    assert not any(tiny_tokenizer.is_special(i) for i in ids)


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_forged_special_token_strings_encode_as_text(tiny_tokenizer, special):
    tok = tiny_tokenizer
    text = f"hello {special} world{special}"
    ids = tok.encode(text)
    assert tok.special_id(special) not in ids
    assert not any(tok.is_special(i) for i in ids)
    assert tok.decode(ids) == text
    assert all(not any(tok.is_special(i) for i in row) for row in tok.encode_batch([text, special]))


def test_special_tokens_have_the_last_ids_in_design_order(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = [tok.special_id(s) for s in SPECIAL_TOKENS]
    assert ids == list(range(tok.vocab_size - len(SPECIAL_TOKENS), tok.vocab_size))
    assert tok.vocab_size == 512
    with pytest.raises(TokenizerError, match="unknown special token"):
        tok.special_id("<|nope|>")


def test_digits_group_by_one_or_two(tiny_tokenizer):
    tok = tiny_tokenizer
    for token in tok.encode("12345 678"):
        text = tok.decode([token])
        digits = [c for c in text if c.isdigit()]
        assert len(digits) <= 2


def test_batch_encode_matches_single(tiny_tokenizer):
    docs = sample_texts(50, seed=3)
    assert tiny_tokenizer.encode_batch(docs) == [tiny_tokenizer.encode(d) for d in docs]
    with pytest.raises(TokenizerError, match="not one str"):
        tiny_tokenizer.encode_batch("abc")


def test_token_bytes_sum_to_utf8_length(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "Héllo wörld 😀 東京 12345"
    table = tok.token_bytes()
    assert sum(table[i] for i in tok.encode(text)) == len(text.encode("utf-8"))
    assert all(table[tok.special_id(s)] == 0 for s in SPECIAL_TOKENS)


def test_save_load_round_trip_and_fingerprint(tmp_path, tiny_tokenizer):
    path = tmp_path / "tok" / "tokenizer.json"
    tiny_tokenizer.save(path)
    loaded = Tokenizer.load(path)
    text = "The model writes print(12*7) and gets 84 😀"
    assert loaded.encode(text) == tiny_tokenizer.encode(text)
    assert loaded.fingerprint() == tiny_tokenizer.fingerprint()
    assert loaded.vocab_size == tiny_tokenizer.vocab_size


def test_load_errors_name_the_file(tmp_path, tiny_tokenizer):
    with pytest.raises(TokenizerError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="bad.json.*not JSON"):
        Tokenizer.load(bad)
    path = tmp_path / "t.json"
    tiny_tokenizer.save(path)
    doc = json.loads(path.read_text())
    doc["special_tokens"] = doc["special_tokens"][::-1]
    path.write_text(json.dumps(doc))
    with pytest.raises(TokenizerError, match="special tokens"):
        Tokenizer.load(path)


def test_training_respects_char_budget_and_doc_cap():
    docs = ["abcd " * 1000] * 50
    tok = Tokenizer.train(iter(docs), vocab_size=300, doc_cap_chars=100, max_chars=1000)
    assert tok.vocab_size <= 300
    with pytest.raises(TokenizerError, match="too small"):
        Tokenizer.train(docs, vocab_size=100)
    with pytest.raises(TokenizerError, match="no text"):
        Tokenizer.train(["", ""], vocab_size=300)


def test_decode_rejects_bad_ids(tiny_tokenizer):
    with pytest.raises(TokenizerError, match="-1"):
        tiny_tokenizer.decode([1, -1])
    with pytest.raises(TokenizerError, match="99999"):
        tiny_tokenizer.decode([99999])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=300))
def test_fast_encoder_matches_the_trained_hf_pipeline(tiny_tokenizer, text):
    # The ids come from tiktoken's engine built from our merges; the HF tokenizer that was trained
    # (and that the saved file holds) must agree on every input.
    hf_ids = tiny_tokenizer._hf.encode(text, add_special_tokens=False).ids
    assert tiny_tokenizer.encode(text) == hf_ids


def test_fast_encoder_matches_hf_on_corpus_like_text(tiny_tokenizer):
    docs = sample_texts(200, seed=11) + ["  leading spaces\n\n\ttabs 1234567 it's we'll Don't\r\n"]
    assert tiny_tokenizer.encode_batch(docs) == [e.ids for e in tiny_tokenizer._hf.encode_batch(docs)]
