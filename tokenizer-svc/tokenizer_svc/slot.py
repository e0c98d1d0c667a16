"""The tokenizer the service is serving, swappable at run time without a restart.

A reload reads and checks the new file completely before it is swapped in, under a lock, as one
attribute assignment; a reload that fails leaves the old tokenizer serving. Each RPC reads
`current` once and uses that snapshot throughout, so a stream that began on the old tokenizer
ends on it too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from chatforge.artifacts import ArtifactStore, check_name
from chatforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One loaded tokenizer and what identifies it."""

    name: str  # the artifact name it was loaded by (what Reload takes)
    tokenizer: Tokenizer
    fingerprint: str


class TokenizerSlot:
    def __init__(self, store: ArtifactStore, name: str):
        """Load `name` from `store` now; raises ArtifactError or TokenizerError if it cannot."""
        self._store = store
        self._lock = threading.Lock()
        self._current = self._load(name)

    @property
    def current(self) -> Loaded:
        return self._current

    def reload(self, name: str | None = None) -> Loaded:
        """Load `name` (default: the current name, re-read from the store) and swap it in."""
        with self._lock:  # two concurrent reloads would otherwise race to be the last swap
            loaded = self._load(name or self._current.name)
            previous, self._current = self._current, loaded
        log.info(
            "reloaded tokenizer %r -> %r (fingerprint %s -> %s)",
            previous.name, loaded.name, previous.fingerprint[:12], loaded.fingerprint[:12],
        )  # fmt: skip
        return loaded

    def _load(self, name: str) -> Loaded:
        t0 = time.perf_counter()
        path = self._store.find_tokenizer(check_name("tokenizer", name))
        tokenizer = Tokenizer.load(path)
        loaded = Loaded(name=name, tokenizer=tokenizer, fingerprint=tokenizer.fingerprint())
        log.info(
            "loaded tokenizer %r from %s: vocab %d, fingerprint %s, %.2f s",
            name, path, tokenizer.vocab_size, loaded.fingerprint[:12], time.perf_counter() - t0,
        )  # fmt: skip
        return loaded
