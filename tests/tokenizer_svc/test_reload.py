"""Swapping the tokenizer without a restart: the Reload RPC, failures that keep the old one serving."""

from __future__ import annotations

import json

import pytest
from tokenizer_svc.server import TokenizerServer

from chatforge.artifacts import ArtifactStore
from chatforge.tokenizer_client import TokenizerClient, TokenizerServiceError
from tests.tokenizer_svc.conftest import make_settings, scrape

TEXT = "the model learns 東京 😀"


@pytest.fixture
def served(tmp_path, tiny_tokenizer, other_tokenizer):
    """A private store and server: these tests change what is served."""
    store = ArtifactStore.from_env(tmp_path)
    tiny_tokenizer.save(store.tokenizer_path("default"))
    other_tokenizer.save(store.tokenizer_path("other"))
    srv = TokenizerServer(make_settings(tmp_path))
    with TokenizerClient(srv.address) as client:
        yield srv, store, client
    srv.stop(0)


def test_reload_to_another_name(served, tiny_tokenizer, other_tokenizer):
    srv, _, client = served
    assert client.encode(TEXT) == tiny_tokenizer.encode(TEXT)
    info = client.reload("other")
    assert (info.name, info.fingerprint, info.vocab_size) == ("other", other_tokenizer.fingerprint(), 400)
    assert client.info() == info
    assert client.encode(TEXT) == other_tokenizer.encode(TEXT) != tiny_tokenizer.encode(TEXT)
    metrics = scrape(srv.metrics_port)
    assert metrics[("chatforge_tokenizer_reloads_total", (("outcome", "ok"),))] == 1
    assert metrics[("chatforge_tokenizer_vocab_size", ())] == 400


def test_reload_rereads_the_current_name(served, other_tokenizer):
    _, store, client = served
    other_tokenizer.save(store.tokenizer_path("default"))  # a re-trained tokenizer under the same name
    assert client.info().fingerprint != other_tokenizer.fingerprint()  # nothing changes until asked
    info = client.reload()
    assert (info.name, info.fingerprint) == ("default", other_tokenizer.fingerprint())


def test_stream_keeps_its_tokenizer_across_a_reload(served, tiny_tokenizer):
    _, _, client = served
    ids = tiny_tokenizer.encode(TEXT)

    def chunks():
        yield ids[:3]
        client.reload("other")  # mid-stream; the stream must still decode with the old vocabulary
        yield ids[3:]

    assert "".join(client.decode_stream(chunks())) == TEXT
    assert client.info().name == "other"


@pytest.mark.parametrize(
    "name, code, message",
    [
        ("missing", "NOT_FOUND", "no tokenizer named 'missing'"),
        ("../etc", "INVALID_ARGUMENT", "invalid tokenizer name"),
        ("broken", "FAILED_PRECONDITION", "did not load"),
    ],
)
def test_failed_reload_keeps_serving(served, tiny_tokenizer, name, code, message):
    srv, store, client = served
    broken = store.tokenizer_path("broken")
    broken.parent.mkdir(parents=True)
    broken.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(TokenizerServiceError) as info:
        client.reload(name)
    assert info.value.code == code and message in info.value.details
    assert client.info().fingerprint == tiny_tokenizer.fingerprint()
    assert client.encode(TEXT) == tiny_tokenizer.encode(TEXT)
    if code != "INVALID_ARGUMENT":  # a malformed name never reaches the store
        assert scrape(srv.metrics_port)[("chatforge_tokenizer_reloads_total", (("outcome", "failed"),))] == 1


def test_reload_can_be_disabled(store_root):
    srv = TokenizerServer(make_settings(store_root, reload_enabled=False))
    try:
        with TokenizerClient(srv.address) as client, pytest.raises(TokenizerServiceError) as info:
            client.reload("other")
        assert info.value.code == "PERMISSION_DENIED"
        assert "CHATFORGE_TOKENIZER_RELOAD_ENABLED" in info.value.details
    finally:
        srv.stop(0)
