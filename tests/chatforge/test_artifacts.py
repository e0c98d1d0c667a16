from __future__ import annotations

import pytest

from chatforge.artifacts import ArtifactError, ArtifactStore


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "x" * 200, "sp ace"])
def test_names_cannot_escape_the_store(tmp_path, bad):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="invalid"):
        store.tokenizer_path(bad)


def test_missing_artifacts_have_clear_errors(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(ArtifactError, match="no tokenizer named 'nope'"):
        store.find_tokenizer("nope")
    with pytest.raises(ArtifactError, match="no complete checkpoint"):
        store.resolve_checkpoint("run1/base")
    with pytest.raises(ArtifactError, match="must be 'run/stage'"):
        store.resolve_checkpoint("justone")


def test_tokenizer_listing(tmp_path, tiny_tokenizer):
    store = ArtifactStore(tmp_path)
    path = store.tokenizer_path("tok1")
    path.parent.mkdir(parents=True)
    tiny_tokenizer.save(path)
    assert store.tokenizers() == ["tok1"]
    assert store.find_tokenizer("tok1") == path
