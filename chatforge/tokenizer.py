"""The tokenizer: byte-level BPE trained with Hugging Face `tokenizers`, plus our special tokens.

Ordinary text goes through the HF pipeline: the GPT-4-style split pattern cuts it into chunks, each
chunk's UTF-8 bytes are mapped onto the 256-character ByteLevel alphabet, and BPE merges them. All 256
bytes are in the initial alphabet, so every Unicode string round-trips and there is no unknown token.

Encoding runs on tiktoken's engine, built at load time from the same vocabulary and split pattern
(`mergeable_ranks`): the ids are identical (tested property-wise against the HF pipeline), and its
encoder is 2-3x faster than the HF one on this kind of text (bench/tokenizer.py prints both), which
matters for pretraining data loading. HF `tokenizers` remains what trains and what the file holds;
nanochat makes the same split (train with its own BPE trainer, encode with tiktoken).

The special tokens are deliberately *not* known to the HF tokenizer. They get the last ids, after the
merges, and only code that asks for them by name (`special_id`) can produce them. Text that merely
contains "<|assistant_start|>" encodes as ordinary bytes, so a user cannot forge a turn boundary; had
the specials been HF "added tokens", `encode` would match them inside any string it is given.

The saved file is one JSON document: the HF tokenizer's own JSON (usable by `tokenizers` alone),
our special tokens and name, and a format version. Torch-free: the tokenizer service has no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tiktoken
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from chatforge.artifacts import shared_mode
from chatforge.contracts.tokens import MIN_VOCAB, SPECIAL_TOKENS

log = logging.getLogger(__name__)


# GPT-4's cl100k pattern with one change, taken from nanochat: numbers split into runs of 1-2
# digits instead of 1-3. With a small vocabulary, nanochat found the 3-digit groups spend too many
# ids on numbers (1000 of them) for little compression gain.
SPLIT_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""

FORMAT = "chatforge.tokenizer"
FORMAT_VERSION = 1


class TokenizerError(ValueError):
    """A tokenizer that cannot be trained or loaded, or an input it cannot take."""


class Tokenizer:
    """Byte-level BPE over ordinary text; special tokens live outside it, with the last ids."""

    def __init__(self, hf: HFTokenizer, *, name: str = "tokenizer"):
        self._hf = hf
        self.name = name
        self._id_bytes = _id_to_bytes_table(hf)
        self._n_base = len(self._id_bytes)
        self.special_ids: dict[str, int] = {s: self._n_base + i for i, s in enumerate(SPECIAL_TOKENS)}
        self._id_bytes += [s.encode("utf-8") for s in SPECIAL_TOKENS]
        # No special tokens are registered with the encoder: encode_ordinary can never emit one.
        self._tt = tiktoken.Encoding(
            name=f"chatforge-{name}",
            pat_str=SPLIT_PATTERN,
            mergeable_ranks=self.mergeable_ranks(),
            special_tokens={},
        )

    # training, saving, loading -----------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        doc_cap_chars: int = 10_000,
        max_chars: int = 2_000_000_000,
        name: str = "tokenizer",
    ) -> Tokenizer:
        """Learn `vocab_size - 9` byte-level BPE tokens from `texts`; the 9 specials come after them.

        Each document is cropped to `doc_cap_chars` (a few huge documents would otherwise dominate
        the pair counts) and no more documents are read once `max_chars` have been taken.
        """
        if not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB:
            raise TokenizerError(
                f"vocab_size {vocab_size!r} is too small: it needs 256 byte tokens plus "
                f"{len(SPECIAL_TOKENS)} special tokens, so at least {MIN_VOCAB}"
            )
        if doc_cap_chars < 1 or max_chars < 1:
            raise TokenizerError(f"doc_cap_chars ({doc_cap_chars}) and max_chars ({max_chars}) must be >= 1")

        hf = _new_hf_tokenizer()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - len(SPECIAL_TOKENS),
            min_frequency=0,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        stream = _CroppedStream(texts, doc_cap_chars=doc_cap_chars, max_chars=max_chars)
        t0 = time.perf_counter()
        hf.train_from_iterator(stream, trainer=trainer)
        if stream.n_chars == 0:
            raise TokenizerError(
                "no text to train the tokenizer on (the iterator gave no non-empty document)"
            )
        tok = cls(hf, name=name)
        log.info(
            "trained tokenizer %r: vocab %d on %d docs, %d chars in %.1f s",
            name, tok.vocab_size, stream.n_docs, stream.n_chars, time.perf_counter() - t0,
        )  # fmt: skip
        if tok.vocab_size < vocab_size:
            # The trainer stops when no pair occurs any more; only a tiny corpus gets here.
            log.warning(
                "tokenizer %r: the corpus only supports %d merges, vocab is %d instead of %d",
                name, tok._n_base - 256, tok.vocab_size, vocab_size,
            )  # fmt: skip
        return tok

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by `save`; any problem is a TokenizerError naming the file."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TokenizerError(f"tokenizer file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"tokenizer file {path} is unreadable or not JSON: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise TokenizerError(f"tokenizer file {path} is not a {FORMAT} file")
        if doc.get("version") != FORMAT_VERSION:
            raise TokenizerError(
                f"tokenizer file {path} has format version {doc.get('version')!r}; "
                f"this code reads version {FORMAT_VERSION}"
            )
        if doc.get("special_tokens") != list(SPECIAL_TOKENS):
            raise TokenizerError(
                f"tokenizer file {path} lists special tokens other than {list(SPECIAL_TOKENS)}"
            )
        try:
            hf = HFTokenizer.from_str(json.dumps(doc["hf_tokenizer"]))
            _check_hf(hf)
            return cls(hf, name=str(doc.get("name", path.parent.name)))
        except Exception as e:  # KeyError, the library's own Exception, our TokenizerError, ...
            raise TokenizerError(f"tokenizer file {path} holds an invalid tokenizer: {e}") from None

    def hf_json(self) -> str:
        """The HF `tokenizers` JSON of the ordinary vocabulary (specials not in it): what an export
        to `transformers` extends with the specials (`chatforge.export.hf`)."""
        return self._hf.to_str()

    @classmethod
    def from_hf_json(cls, text: str, *, name: str) -> Tokenizer:
        """The inverse of `hf_json`, checked as `load` checks a file (TokenizerError when it is not
        a chatforge tokenizer's pipeline)."""
        try:
            hf = HFTokenizer.from_str(text)
            _check_hf(hf)
            return cls(hf, name=name)
        except Exception as e:  # the library's own Exception, our TokenizerError, ...
            raise TokenizerError(f"not a chatforge tokenizer: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write one JSON file atomically: a crash leaves the old file or the new one, never half."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self._document(), ensure_ascii=False, indent=1).encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, shared_mode(0o666))  # readable by the store's other users, as a plain create
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _document(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "special_tokens": list(SPECIAL_TOKENS),
            "hf_tokenizer": json.loads(self._hf.to_str()),
        }

    # vocabulary ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Every id the tokenizer can produce, specials included (the model's embedding rows)."""
        return len(self._id_bytes)

    @property
    def bos_id(self) -> int:
        return self.special_ids["<|bos|>"]

    def special_id(self, token: str) -> int:
        try:
            return self.special_ids[token]
        except KeyError:
            raise TokenizerError(
                f"unknown special token {token!r}; known: {', '.join(SPECIAL_TOKENS)}"
            ) from None

    def is_special(self, token_id: int) -> bool:
        return self._n_base <= token_id < len(self._id_bytes)

    def id_to_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a special token: its UTF-8 name), for streaming decode."""
        if not 0 <= token_id < len(self._id_bytes):
            raise TokenizerError(f"token id {token_id} out of range [0, {len(self._id_bytes)})")
        return self._id_bytes[token_id]

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes per id, 0 for specials: bits-per-byte divides loss by these, and specials are not text."""
        return [len(b) for b in self._id_bytes[: self._n_base]] + [0] * len(SPECIAL_TOKENS)

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Ordinary token bytes -> id; ids follow merge order, so tiktoken can rebuild the same BPE."""
        return {b: i for i, b in enumerate(self._id_bytes[: self._n_base])}

    def fingerprint(self) -> str:
        """sha256 of what decides the ids (split pattern, vocab, merges, specials), not of the name.

        Computed from parsed content rather than the file's bytes so that re-saving, or a newer
        `tokenizers` that serializes differently, keeps the fingerprint a checkpoint was made with.
        """
        model = json.loads(self._hf.to_str())["model"]
        merges = [m.split(" ") if isinstance(m, str) else list(m) for m in model["merges"]]
        content = {
            "version": FORMAT_VERSION,
            "split_pattern": SPLIT_PATTERN,
            "vocab": [b.hex() for b in self._id_bytes[: self._n_base]],
            "merges": merges,
            "special_tokens": list(SPECIAL_TOKENS),
        }
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    # encoding and decoding -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids; never produces a special id, whatever the text contains."""
        if not isinstance(text, str):
            raise TokenizerError(f"cannot encode {type(text).__name__} input: expected str")
        return self._tt.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`[encode(t) for t in texts]`, split into contiguous chunks encoded on all cores.

        The Rust encoder releases the GIL, so threads scale. One chunk list per call on a pool kept
        by the tokenizer beats tiktoken's own batch call (a fresh pool of 8 threads, one task per
        text) by 1.1-1.5x on 2 cores: measured in bench/tokenizer.py.
        """
        if isinstance(texts, str):  # list("abc") would quietly encode each character
            raise TokenizerError("encode_batch takes a sequence of str, not one str")
        texts = list(texts)
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TokenizerError(f"cannot encode batch: {type(bad).__name__} item, expected str")
        n_chunks = min(len(texts), 4 * _N_THREADS)
        if n_chunks < 2:
            return [self._tt.encode_ordinary(t) for t in texts]
        bounds = [len(texts) * k // n_chunks for k in range(n_chunks + 1)]
        chunks = [texts[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
        encode = self._tt.encode_ordinary
        results = _pool().map(lambda chunk: [encode(t) for t in chunk], chunks)
        return [ids for chunk in results for ids in chunk]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; specials appear as their names; bytes that are not valid UTF-8 become U+FFFD."""
        table = self._id_bytes
        try:
            if min(ids, default=0) < 0:  # a negative index would silently wrap around in Python
                raise IndexError
            data = b"".join([table[i] for i in ids])
        except (IndexError, TypeError):
            bad = next((i for i in ids if not (isinstance(i, int) and 0 <= i < len(table))), ids)
            raise TokenizerError(
                f"cannot decode token id {bad!r}: ids must be ints in [0, {len(table)})"
            ) from None
        return data.decode("utf-8", errors="replace")


# helpers ---------------------------------------------------------------------------------------
_N_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One encoding pool per process, started on first use (threads are idle otherwise)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_N_THREADS, thread_name_prefix="tokenizer")
        return _POOL


def _new_hf_tokenizer() -> HFTokenizer:
    # ignore_merges: a chunk that is itself a token is emitted whole, as tiktoken does (and as
    # HF's own Llama-3 tokenizer sets for the same reason), so a tiktoken Encoding built from
    # `mergeable_ranks` gives the same ids; plain merge-order BPE can miss such a token in rare
    # chunks. The trainer keeps the flag: it only replaces vocab and merges.
    hf = HFTokenizer(models.BPE(byte_fallback=False, ignore_merges=True))
    # Split first, with our pattern, then map bytes to the ByteLevel alphabet. use_regex=False
    # because ByteLevel's own regex is GPT-2's and would re-split our chunks.
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    # Not used by `Tokenizer.decode` (a byte table is simpler), but makes the saved HF JSON whole.
    hf.decoder = decoders.ByteLevel()
    return hf


def _check_hf(hf: HFTokenizer) -> None:
    """Refuse HF tokenizers that break our invariants (a hand-edited or foreign file).

    The pipeline must be exactly the one `train` builds: `fingerprint`, `mergeable_ranks` and the
    no-forged-specials guarantee all assume it. Both sides are serialized by the installed library,
    so a field a newer `tokenizers` adds does not make an older file fail.
    """
    if hf.get_added_tokens_decoder():
        raise TokenizerError("the HF tokenizer has added tokens; special tokens must stay outside it")
    if not isinstance(hf.model, models.BPE) or not hf.model.ignore_merges or hf.model.byte_fallback:
        raise TokenizerError("the HF model must be BPE with ignore_merges=true and byte_fallback=false")
    got, want = json.loads(hf.to_str()), json.loads(_new_hf_tokenizer().to_str())
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        if got[part] != want[part]:
            raise TokenizerError(f"the HF {part} differs from chatforge's: {json.dumps(got[part])[:200]}")


def _byte_alphabet() -> dict[str, int]:
    """ByteLevel alphabet character -> the byte it stands for.

    ByteLevel (GPT-2's scheme) keeps the 188 printable Latin-1 bytes as their own character and
    moves the other 68 (controls, space, ...) to U+0100 onwards, in byte order, so every byte has a
    visible one-character name.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    char_to_byte = {chr(b): b for b in printable}
    shifted = (b for b in range(256) if chr(b) not in char_to_byte)
    for n, b in enumerate(shifted):
        char_to_byte[chr(256 + n)] = b
    return char_to_byte


def _id_to_bytes_table(hf: HFTokenizer) -> list[bytes]:
    """Raw bytes of every ordinary id; also checks the ids are 0..n-1 and cover all 256 bytes."""
    alphabet = _byte_alphabet()
    by_id = sorted(hf.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise TokenizerError(f"vocab ids are not exactly 0..{len(by_id) - 1}")
    try:
        table = [bytes(alphabet[c] for c in token) for token, _ in by_id]
    except KeyError as e:
        raise TokenizerError(f"vocab has a token outside the byte-level alphabet ({e})") from None
    if sum(len(b) == 1 for b in set(table)) != 256:
        raise TokenizerError("vocab lacks some of the 256 single-byte tokens; it is not byte-level")
    return table


class _CroppedStream:
    """The training iterator: crops documents, skips empty ones, and stops pulling at max_chars."""

    def __init__(self, texts: Iterable[str], *, doc_cap_chars: int, max_chars: int):
        self._texts = texts
        self._doc_cap = doc_cap_chars
        self._max_chars = max_chars
        self.n_docs = 0
        self.n_chars = 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            if not isinstance(text, str):
                raise TokenizerError(f"training texts must be str, got {type(text).__name__}")
            doc = text[: min(self._doc_cap, self._max_chars - self.n_chars)]
            if doc:
                self.n_docs += 1
                self.n_chars += len(doc)
                yield doc
            if self.n_chars >= self._max_chars:
                return  # before pulling the next document: the source may be an expensive stream
