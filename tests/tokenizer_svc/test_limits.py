"""Limits before work in the tokenizer service: counts as well as characters, requests that do not
decode, and Reload only for an admin.

Two million empty parts (a 7.6 MiB request) pass every character limit; they used to cost 11 s and
about 1 GB. gRPC's max message size bounds what is parsed; the parts are counted before anything
is built from them. The server runs in this process, so its peak memory is this process's.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.internal.encoder import _VarintBytes
from tokenizer_svc.metrics import TokenizerMetrics
from tokenizer_svc.server import TokenizerServer
from tokenizer_svc.servicer import Limits, TokenizerServicer
from tokenizer_svc.settings import load_settings
from tokenizer_svc.slot import TokenizerSlot

from chatforge.artifacts import ArtifactStore
from chatforge.tokenizer_client import TokenizerClient, TokenizerServiceError
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from tests.oversize import PeakRSS
from tests.tokenizer_svc.conftest import make_settings, requests_total

TOKEN = "an-admin-token-for-tests"


def _render_request(n_parts: int, n_messages: int = 1) -> bytes:
    """A RenderConversationRequest's wire bytes with `n_parts` empty text parts in each message,
    written directly (building millions of Part objects here would measure the client)."""
    parts = b"\x12\x02\x0a\x00" * n_parts  # ChatMessage.parts: a Part whose text is ""
    message = pb.ChatMessage(role="user").SerializeToString() + parts
    messages = (b"\x0a" + _VarintBytes(len(message)) + message) * n_messages
    return b"\x0a" + _VarintBytes(len(messages)) + messages


def _raw(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    """A unary call that sends bytes as they are and returns the answer's bytes."""
    return channel.unary_unary(f"/chatforge.v1.TokenizerService/{method}")


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# --- counts ------------------------------------------------------------------------------------------


def test_two_million_empty_parts_are_invalid_argument_fast(server, channel):
    data = _render_request(2_000_000)
    assert len(data) > 7 * 1024 * 1024  # the attack in issue 11
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        code, details = _status(lambda: _raw(channel, "RenderConversation")(data, timeout=30))
        seconds = time.perf_counter() - t0
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "2000000 parts" in details, details
    # Parsing 7.6 MiB into 2M messages is what gRPC's max_message_bytes allows (~80 MB, ~0.1 s);
    # nothing is built from them.
    assert seconds < 2 and peak.grew_mib < 256, (seconds, peak.grew_mib)


@pytest.mark.parametrize(
    ("n_parts", "n_messages", "says"), [(17, 1, "17 parts"), (1, 5, "5 messages"), (5, 4, "20 parts")]
)
def test_messages_and_parts_are_counted(store_root, n_parts, n_messages, says):
    srv = TokenizerServer(make_settings(store_root, max_conversation_messages=4, max_conversation_parts=16))
    try:
        with grpc.insecure_channel(srv.address) as channel:
            code, details = _status(
                lambda: _raw(channel, "RenderConversation")(_render_request(n_parts, n_messages), timeout=10)
            )
            assert code == grpc.StatusCode.INVALID_ARGUMENT and says in details, details
            within = pb.RenderConversationRequest.FromString(_render_request(4, 1))
            assert pb_grpc.TokenizerServiceStub(channel).RenderConversation(within, timeout=10).ids
    finally:
        srv.stop(0)


# --- bytes that do not decode ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["Encode", "RenderConversation", "Reload", "Info"])
def test_undecodable_bytes_are_invalid_argument(server, channel, method):
    before = requests_total(server.metrics_port, method, "INVALID_ARGUMENT")
    code, details = _status(lambda: _raw(channel, method)(b"\xff\xff\xff\xff", timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not decode" in details, (code, details)
    assert requests_total(server.metrics_port, method, "INVALID_ARGUMENT") == before + 1


def test_an_undecodable_request_mid_stream_is_invalid_argument(channel, tiny_tokenizer):
    call = channel.stream_stream("/chatforge.v1.TokenizerService/DecodeStream")
    good = pb.DecodeStreamRequest(ids=tiny_tokenizer.encode("ok")).SerializeToString()
    code, details = _status(lambda: list(call(iter([good, b"\xff\xff\xff"]), timeout=10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not decode" in details


def test_the_server_still_serves_after_garbage(client, channel):
    _status(lambda: _raw(channel, "Encode")(b"\xff\xff", timeout=10))
    assert client.encode("still here")


# --- Reload is an admin's -------------------------------------------------------------------------


@pytest.fixture
def with_token(store_root):
    srv = TokenizerServer(make_settings(store_root, admin_token=TOKEN))
    with TokenizerClient(srv.address) as client:
        yield client
    srv.stop(0)


def test_reload_needs_the_admin_token_when_one_is_set(with_token):
    for token in ("", "wrong-token-of-some-length"):
        with pytest.raises(TokenizerServiceError) as e:
            with_token.reload(admin_token=token)
        assert e.value.code == "UNAUTHENTICATED", e.value
    assert with_token.reload("other", admin_token=TOKEN).name == "other"
    assert with_token.encode("ok")  # other RPCs need nothing


def test_without_a_token_reload_is_refused_off_loopback(store_root):
    """A server bound beyond loopback (its Limits say so; the test itself listens on 127.0.0.1)."""
    store = ArtifactStore.from_env(store_root)
    servicer = TokenizerServicer(
        TokenizerSlot(store, "default"), Limits(1000, 8, 500, True, loopback=False), TokenizerMetrics()
    )
    from concurrent.futures import ThreadPoolExecutor

    server = grpc.server(ThreadPoolExecutor(2))
    pb_grpc.add_TokenizerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with TokenizerClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(TokenizerServiceError) as e:
                client.reload()
            assert (
                e.value.code == "PERMISSION_DENIED" and "CHATFORGE_TOKENIZER_ADMIN_TOKEN" in e.value.details
            )
    finally:
        server.stop(0)


def test_a_short_admin_token_is_refused_at_start():
    with pytest.raises(Exception, match="at least 16 characters"):
        load_settings(admin_token="short")
