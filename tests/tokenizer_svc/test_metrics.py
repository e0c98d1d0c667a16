"""/metrics over HTTP: requests by method and status code, latency, tokens processed."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tokenizer_svc.server import ServerError, TokenizerServer

from chatforge.tokenizer_client import TokenizerServiceError
from tests.tokenizer_svc.conftest import make_settings, requests_total, scrape


def test_requests_latency_and_tokens_are_counted(server, client, tiny_tokenizer):
    before = scrape(server.metrics_port)
    ids = client.encode("count these tokens")
    client.decode(ids)
    client.encode_batch(["a b", "c d e"])
    with pytest.raises(TokenizerServiceError):
        client.decode([10**6])
    "".join(client.decode_stream([ids[:2], ids[2:]]))
    after = scrape(server.metrics_port)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("chatforge_tokenizer_requests_total", method="Encode", code="OK") == 1
    assert delta("chatforge_tokenizer_requests_total", method="Decode", code="OK") == 1
    assert delta("chatforge_tokenizer_requests_total", method="Decode", code="INVALID_ARGUMENT") == 1
    assert delta("chatforge_tokenizer_requests_total", method="DecodeStream", code="OK") == 1
    assert delta("chatforge_tokenizer_request_duration_seconds_count", method="Encode") == 1
    assert delta("chatforge_tokenizer_request_duration_seconds_sum", method="Encode") > 0
    assert delta("chatforge_tokenizer_tokens_total", method="Encode") == len(ids)
    assert delta("chatforge_tokenizer_tokens_total", method="Decode") == len(ids)
    assert delta("chatforge_tokenizer_tokens_total", method="DecodeStream") == len(ids)
    expected_batch = sum(len(tiny_tokenizer.encode(t)) for t in ["a b", "c d e"])
    assert delta("chatforge_tokenizer_tokens_total", method="EncodeBatch") == expected_batch
    assert after[("chatforge_tokenizer_vocab_size", ())] == tiny_tokenizer.vocab_size


def test_health_checks_are_not_counted_as_tokenizer_requests(server, channel):
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    methods = {
        dict(labels)["method"]
        for name, labels in scrape(server.metrics_port)
        if name.startswith("chatforge_tokenizer_requests")
    }
    assert "Check" not in methods
    assert requests_total(server.metrics_port, "Check", "OK") == 0


def test_metrics_can_be_turned_off(store_root):
    srv = TokenizerServer(make_settings(store_root, metrics_enabled=False))
    try:
        assert srv.metrics_port is None
    finally:
        srv.stop(0)


def test_port_in_use_is_a_clear_error(server, store_root):
    with pytest.raises(ServerError, match="CHATFORGE_TOKENIZER_PORT"):
        TokenizerServer(make_settings(store_root, port=server.port))
    with pytest.raises(ServerError, match="CHATFORGE_TOKENIZER_METRICS_PORT"):
        TokenizerServer(make_settings(store_root, metrics_port=server.metrics_port))
