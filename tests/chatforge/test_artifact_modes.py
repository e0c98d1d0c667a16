"""What the artifact store's atomic writes leave is readable by its other users, as a plain create
would be: compose's services and the chart's pods run as different uids, and the gateway and the
tokenizer service read what training jobs write (tempfile's 0600/0700 locked them out)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from chatforge import checkpoint
from chatforge.tokenizer import Tokenizer
from tests.conftest import sample_texts


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_saved_tokenizer_is_readable_by_others(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "tokenizers" / "t" / "tokenizer.json"
    Tokenizer.train(sample_texts(50), vocab_size=300, name="t").save(path)
    assert mode(path) == 0o644


def test_a_saved_checkpoint_is_readable_by_others(tmp_path: Path, umask_022: None) -> None:
    step = checkpoint.save(tmp_path / "sft", 1, {"w": torch.zeros(2)}, config={"n_layer": 1})
    assert mode(step) == 0o755
    assert {f.name: mode(f) for f in step.iterdir()} == dict.fromkeys((f.name for f in step.iterdir()), 0o644)


def test_a_stricter_umask_is_kept(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        path = tmp_path / "tokenizer.json"
        Tokenizer.train(sample_texts(50), vocab_size=300, name="t").save(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o600
