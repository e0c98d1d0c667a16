"""A real tokenizer service on 127.0.0.1 (port 0) over an artifact store in a temp dir."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tokenizer_svc.server import TokenizerServer
from tokenizer_svc.settings import Settings, load_settings

from chatforge.artifacts import ArtifactStore
from chatforge.tokenizer import Tokenizer
from chatforge.tokenizer_client import TokenizerClient
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from tests.conftest import sample_texts


@pytest.fixture(scope="session")
def other_tokenizer() -> Tokenizer:
    """A second tokenizer with a different vocabulary, to reload to."""
    return Tokenizer.train(sample_texts(300, seed=7), vocab_size=400, name="test-other")


@pytest.fixture(scope="session")
def store_root(tmp_path_factory, tiny_tokenizer, other_tokenizer) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    store = ArtifactStore.from_env(root)
    tiny_tokenizer.save(store.tokenizer_path("default"))
    other_tokenizer.save(store.tokenizer_path("other"))
    return root


def make_settings(store_root: Path, **overrides) -> Settings:
    return load_settings(**{"artifacts_root": str(store_root), "port": 0, "metrics_port": 0, **overrides})


@pytest.fixture(scope="module")
def server(store_root) -> Iterator[TokenizerServer]:
    """Shared by a module's tests; tests that reload or stop it start their own."""
    srv = TokenizerServer(make_settings(store_root))
    yield srv
    srv.stop(0)


@pytest.fixture(scope="module")
def client(server) -> Iterator[TokenizerClient]:
    with TokenizerClient(server.address, timeout_s=10) as c:
        c.wait_ready(10)
        yield c


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel) -> pb_grpc.TokenizerServiceStub:
    """The raw generated stub: for requests the typed client would refuse to build."""
    return pb_grpc.TokenizerServiceStub(channel)


def scrape(metrics_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample on /metrics as {(name, sorted labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests_total(metrics_port: int, method: str, code: str) -> float:
    key = ("chatforge_tokenizer_requests_total", (("code", code), ("method", method)))
    return scrape(metrics_port).get(key, 0.0)
