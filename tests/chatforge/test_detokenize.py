from __future__ import annotations

from chatforge.detokenize import StreamDecoder


def test_stream_decode_never_splits_multibyte_characters(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "東京は日本の首都です。 😀🚀 naïve"
    ids = tok.encode(text)
    # The point of the test: some character really is split across tokens.
    assert any("\ufffd" in tok.decode([i]) for i in ids)
    decoder = StreamDecoder(tok)
    deltas = [decoder.feed(i) for i in ids] + [decoder.flush()]
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)


def test_stream_decode_specials_and_invalid_bytes(tiny_tokenizer):
    tok = tiny_tokenizer
    decoder = StreamDecoder(tok)
    assert decoder.feed(tok.special_id("<|assistant_end|>")) == "<|assistant_end|>"
    # A lone continuation byte can never become valid: it is replaced, not raised.
    lone = next(i for i in range(tok.vocab_size) if tok.id_to_bytes(i) == b"\x80")
    assert decoder.feed(lone) + decoder.flush() == "\ufffd"
