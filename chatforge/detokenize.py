"""Streaming detokenization: token ids in, text deltas out, never splitting a UTF-8 character.

A byte-level BPE token can end in the middle of a multi-byte character (an emoji is four bytes and
often two or three tokens). Decoding each token on its own would emit U+FFFD replacement characters;
instead the bytes are fed to an incremental UTF-8 decoder that holds an incomplete tail back until
the next token completes it. Used by the tokenizer service's DecodeStream and by the inference
engine's text deltas.
"""

from __future__ import annotations

import codecs
from typing import Protocol


class ByteTokenizer(Protocol):
    def id_to_bytes(self, token_id: int) -> bytes: ...


class StreamDecoder:
    """Feed ids one at a time (or in chunks); each call returns the text that became complete."""

    def __init__(self, tokenizer: ByteTokenizer):
        self._tokenizer = tokenizer
        # errors="replace": a sequence that can never become valid UTF-8 (the model may emit
        # any byte token) turns into U+FFFD once it is known to be invalid, not an exception.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.id_to_bytes(token_id))

    def feed_many(self, token_ids: list[int]) -> str:
        return self._decoder.decode(b"".join(self._tokenizer.id_to_bytes(t) for t in token_ids))

    def flush(self) -> str:
        """End of stream: whatever is still held back is emitted (as U+FFFD if incomplete)."""
        return self._decoder.decode(b"", final=True)
