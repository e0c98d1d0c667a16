"""Fixtures shared by every part's tests."""

from __future__ import annotations

import os
import random

import pytest

from chatforge.raylocal import loopback_env

# Nothing in the tests may reach a hub: `datasets` and `huggingface_hub` fail at once instead of
# trying the network.
for _var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
# Ray reads its loopback settings (usage stats off among them) when it is first imported, and a test
# may import it for a constant before any Ray starts: set them once for the session.
for _var, _value in loopback_env().items():
    os.environ.setdefault(_var, _value)


def sample_texts(n_docs: int = 400, seed: int = 0) -> list[str]:
    """Varied English-like text with digits, code, CJK and emoji, so a small BPE learns real merges
    and multi-byte characters get split across byte tokens."""
    rng = random.Random(seed)
    words = (
        "the model learns to predict the next token from a stream of text and a small network "
        "trained on a laptop can still write short sentences about cats dogs rivers and numbers "
        "print def return import for while if else class self value total count"
    ).split()
    extras = ["東京は日本の首都です。", "你好，世界", "😀 🚀 ✨", "naïve café über", "x = 12345 + 678"]
    docs = []
    for _ in range(n_docs):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
        if rng.random() < 0.3:
            sentence += " " + rng.choice(extras)
        docs.append(sentence.capitalize() + ".")
    return docs


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A real BPE tokenizer (vocab 512) trained once per session on generated text."""
    from chatforge.tokenizer import Tokenizer

    return Tokenizer.train(sample_texts(), vocab_size=512, name="test-tiny")
