"""Bad requests get a status and a message, never a crash; the server keeps serving afterwards."""

from __future__ import annotations

import queue
import time

import grpc
import pytest
from tokenizer_svc.server import TokenizerServer

from chatforge.chat import ConversationError
from chatforge.tokenizer_client import TokenizerClient, TokenizerServiceError
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from tests.tokenizer_svc.conftest import make_settings, requests_total, scrape

LIMIT_CHARS = 1000


@pytest.fixture(scope="module")
def server(store_root):
    """Small limits, so oversize input is cheap to send."""
    srv = TokenizerServer(
        make_settings(
            store_root, max_text_chars=LIMIT_CHARS, max_batch_texts=8, max_ids=500, max_message_bytes=100_000
        )
    )
    yield srv
    srv.stop(0)


def _status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _conversation(*messages: pb.ChatMessage) -> pb.RenderConversationRequest:
    return pb.RenderConversationRequest(conversation=pb.Conversation(messages=list(messages)))


def _msg(role: str, *parts: pb.Part) -> pb.ChatMessage:
    return pb.ChatMessage(role=role, parts=list(parts))


@pytest.mark.parametrize(
    "ids, message",
    [([5, 100_000], "cannot decode token id 100000"), ([-1], "cannot decode token id -1")],
)
def test_unknown_token_id(stub, ids, message):
    code, details = _status(lambda: stub.Decode(pb.DecodeRequest(ids=ids), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


def test_unknown_token_id_mid_stream(stub, tiny_tokenizer):
    requests = iter(
        [pb.DecodeStreamRequest(ids=tiny_tokenizer.encode("ok")), pb.DecodeStreamRequest(ids=[99_999])]
    )
    responses = stub.DecodeStream(requests, timeout=10)
    assert next(responses).text == "ok"  # the good chunk is answered before the bad one fails the stream
    code, details = _status(lambda: next(responses))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "99999" in details


@pytest.mark.parametrize(
    "request_, message",
    [
        (_conversation(), "conversation is empty"),
        (_conversation(_msg("assistant", pb.Part(text="hi"))), "expected role 'user'"),
        (_conversation(_msg("wizard", pb.Part(text="hi"))), "unknown role 'wizard'"),
        (_conversation(_msg("user", pb.Part(text="a")), _msg("user", pb.Part(text="b"))), "must alternate"),
        (_conversation(_msg("user", pb.Part())), "empty part"),
        (_conversation(_msg("user", pb.Part(python="print(1)"))), "only assistant messages may hold python"),
        (_conversation(_msg("system", pb.Part(text="s"))), "no user message"),
    ],
)
def test_malformed_conversation(stub, request_, message):
    code, details = _status(lambda: stub.RenderConversation(request_, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"max_tokens": -1}, "max_tokens must be >= 0"),
        ({"truncate": True}, "truncate needs max_tokens"),
        ({"for_completion": True, "with_loss_mask": True}, "for_completion takes neither"),
        ({"max_tokens": 3}, "over the limit of 3"),
        ({"for_completion": True, "max_tokens": 3}, "over the limit of 3"),
    ],
)
def test_bad_render_options(stub, fields, message):
    request = _conversation(_msg("user", pb.Part(text="hello there")))
    for k, v in fields.items():
        setattr(request, k, v)
    code, details = _status(lambda: stub.RenderConversation(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


def test_completion_of_a_finished_conversation(stub):
    request = _conversation(_msg("user", pb.Part(text="q")), _msg("assistant", pb.Part(text="a")))
    request.for_completion = True
    code, details = _status(lambda: stub.RenderConversation(request, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "must end with a user message" in details


def test_oversize_inputs(stub):
    big = "a" * (LIMIT_CHARS + 1)
    cases = [
        (lambda: stub.Encode(pb.EncodeRequest(text=big), timeout=10), "text has 1001 characters"),
        (lambda: stub.CountTokens(pb.CountTokensRequest(text=big), timeout=10), "over the limit of 1000"),
        (lambda: stub.EncodeBatch(pb.EncodeBatchRequest(texts=["ok", big]), timeout=10), "texts[1] has 1001"),
        (lambda: stub.EncodeBatch(pb.EncodeBatchRequest(texts=["a"] * 9), timeout=10), "batch of 9 texts"),
        (lambda: stub.Decode(pb.DecodeRequest(ids=[1] * 501), timeout=10), "501 ids in one request"),
        (
            lambda: stub.RenderConversation(_conversation(_msg("user", pb.Part(text=big))), timeout=10),
            "conversation has 1001 characters",
        ),
    ]
    for call, message in cases:
        code, details = _status(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert message in details


def test_message_over_transport_limit(stub, client):
    code, _ = _status(lambda: stub.Encode(pb.EncodeRequest(text="a" * 200_000), timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert client.encode("still serving") != []


def test_typed_client_errors(client):
    with pytest.raises(TokenizerServiceError) as info:
        client.decode([10**6])
    assert info.value.code == "INVALID_ARGUMENT" and "10000" in info.value.details
    with pytest.raises(ConversationError, match="expected role 'user'"):  # refused before sending
        client.render_conversation([{"role": "assistant", "content": "hi"}])
    with pytest.raises(TypeError):
        client.encode_batch("one string")


def test_unreachable_service():
    with TokenizerClient("127.0.0.1:1", timeout_s=2) as c:
        with pytest.raises(TokenizerServiceError) as info:
            c.encode("x")
        assert info.value.code == "UNAVAILABLE"
        with pytest.raises(TokenizerServiceError, match="no tokenizer service"):
            c.wait_ready(0.2)


def test_deadline_stops_a_long_batch(store_root, tiny_tokenizer):
    """The server notices a passed deadline between chunks and abandons the rest of the batch."""
    big = 32 * 1024 * 1024
    srv = TokenizerServer(
        make_settings(store_root, max_message_bytes=big, max_text_chars=20_000, max_batch_texts=2048)
    )
    # ~0.5 s of encoding on two idle cores: well past the 0.2 s deadline.
    texts = [("the model learns to predict the next token " * 250)[:10_000]] * 1536
    try:
        with TokenizerClient(srv.address, timeout_s=0.2, max_message_bytes=big) as c:
            # On a loaded machine the 15 MB request can outlive its deadline before the handler
            # starts, and gRPC then never calls it; only a handler that ran can show the check.
            for _attempt in range(3):
                with pytest.raises(TokenizerServiceError) as info:
                    c.encode_batch(texts)
                assert info.value.code == "DEADLINE_EXCEEDED"
                if _wait_for(
                    lambda: requests_total(srv.metrics_port, "EncodeBatch", "DEADLINE_EXCEEDED") >= 1
                ):
                    break
            else:
                pytest.fail(f"the handler never ran to see its deadline: {scrape(srv.metrics_port)}")
            # Tokens are counted only when a batch completes: none were, so the work was abandoned.
            tokens = scrape(srv.metrics_port).get(
                ("chatforge_tokenizer_tokens_total", (("method", "EncodeBatch"),))
            )
            assert not tokens
            c.timeout_s = 10
            assert c.encode("after") == tiny_tokenizer.encode("after")
    finally:
        srv.stop(0)


def _wait_for(condition, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_concurrency_limit_fails_fast(store_root, tiny_tokenizer):
    """Past max_concurrent_rpcs a call is refused at once with RESOURCE_EXHAUSTED, not queued."""
    srv = TokenizerServer(make_settings(store_root, max_concurrent_rpcs=1))
    pending: queue.SimpleQueue = queue.SimpleQueue()
    try:
        with grpc.insecure_channel(srv.address) as ch:
            stub = pb_grpc.TokenizerServiceStub(ch)
            responses = stub.DecodeStream(iter(pending.get, None), timeout=20)  # holds the only slot
            pending.put(pb.DecodeStreamRequest(ids=tiny_tokenizer.encode("busy")))
            assert next(responses).text == "busy"
            code, _ = _status(lambda: stub.Encode(pb.EncodeRequest(text="x"), timeout=10))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            pending.put(None)
            assert [r.final for r in responses] == [True]
            assert list(stub.Encode(pb.EncodeRequest(text="x"), timeout=10).ids) == tiny_tokenizer.encode("x")
    finally:
        srv.stop(0)
