"""Every RPC over a real gRPC server, checked against the in-process tokenizer and chat renderer."""

from __future__ import annotations

import queue
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatforge.chat import render_conversation, render_for_completion
from chatforge.tokenizer import SPECIAL_TOKENS
from chatforge.tokenizer_client import conversation_to_proto
from chatforge.v1 import tokenizer_pb2 as pb
from tests.tokenizer_svc.conftest import requests_total

TEXTS = [
    "Hello world, the model learns.",
    "東京は日本の首都です。",
    "😀 🚀 ✨ naïve café",
    "",
    "x = 12345 + 678\n",
]

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+3?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me compute. "},
                {"type": "python", "text": "print(2+3)"},
                {"type": "python_output", "text": "5\n"},
                {"type": "text", "text": "It is 5."},
            ],
        },
        {"role": "user", "content": "And 東京?"},
    ]
}


def test_encode_and_decode_match_in_process(client, tiny_tokenizer):
    for text in TEXTS:
        ids = client.encode(text)
        assert ids == tiny_tokenizer.encode(text)
        assert client.decode(ids) == text


def test_encode_never_produces_special_ids(client, tiny_tokenizer):
    ids = client.encode("<|assistant_start|>hi<|bos|>")
    assert not any(tiny_tokenizer.is_special(i) for i in ids)


def test_decode_shows_special_tokens_by_name(client, tiny_tokenizer):
    ids = [tiny_tokenizer.bos_id, *tiny_tokenizer.encode("hi")]
    assert client.decode(ids) == "<|bos|>hi"


def test_encode_batch_keeps_order(client, tiny_tokenizer):
    texts = TEXTS * 30  # more than one server-side chunk of 64
    assert client.encode_batch(texts) == [tiny_tokenizer.encode(t) for t in texts]
    assert client.encode_batch([]) == []


def test_count_tokens(client, tiny_tokenizer):
    for text in TEXTS:
        assert client.count_tokens(text) == len(tiny_tokenizer.encode(text))


def test_render_conversation_with_loss_mask(client, tiny_tokenizer):
    conversation = {"messages": CONVERSATION["messages"][:3]}
    expected = render_conversation(tiny_tokenizer, conversation)
    got = client.render_conversation(conversation)
    assert (got.ids, got.mask, got.truncated) == (expected.ids, expected.mask, False)
    assert 1 in got.mask and 0 in got.mask


def test_render_without_mask_and_truncated(stub, tiny_tokenizer):
    conversation = {"messages": CONVERSATION["messages"][:3]}
    full = render_conversation(tiny_tokenizer, conversation)
    request = pb.RenderConversationRequest(conversation=conversation_to_proto(conversation))
    r = stub.RenderConversation(request, timeout=10)
    assert list(r.ids) == full.ids and list(r.loss_mask) == [] and not r.truncated
    request.max_tokens, request.truncate, request.with_loss_mask = 7, True, True
    r = stub.RenderConversation(request, timeout=10)
    assert list(r.ids) == full.ids[:7] and list(r.loss_mask) == full.mask[:7] and r.truncated


def test_render_for_completion(client, tiny_tokenizer):
    ids = client.render_for_completion(CONVERSATION)
    assert ids == render_for_completion(tiny_tokenizer, CONVERSATION)
    assert ids[-1] == tiny_tokenizer.special_id("<|assistant_start|>")


def test_info(client, tiny_tokenizer):
    info = client.info()
    assert info.name == "default"
    assert info.fingerprint == tiny_tokenizer.fingerprint()
    assert info.vocab_size == tiny_tokenizer.vocab_size
    assert info.bos_id == tiny_tokenizer.bos_id
    assert list(info.special_tokens) == list(SPECIAL_TOKENS)
    assert info.special_tokens == tiny_tokenizer.special_ids


def test_decode_stream_never_splits_emoji_or_cjk(client, tiny_tokenizer):
    text = "Hi 😀🚀 東京は日本の首都です 你好 ✨!"
    ids = tiny_tokenizer.encode(text)
    # The premise: some tokens end mid-character, so decoding them one by one would emit U+FFFD.
    assert any("\ufffd" in tiny_tokenizer.decode([i]) for i in ids)
    deltas = list(client.decode_stream([i] for i in ids))
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert len(deltas) < len(ids)  # bytes were held back until their character completed


def test_decode_stream_answers_each_request_and_flushes(stub, tiny_tokenizer):
    emoji = tiny_tokenizer.encode("😀")
    assert len(emoji) > 1
    chunks = [[tiny_tokenizer.encode("a")[0]], emoji[:1], emoji[1:]]
    responses = list(stub.DecodeStream(iter(pb.DecodeStreamRequest(ids=c) for c in chunks), timeout=10))
    assert [(r.text, r.final) for r in responses] == [("a", False), ("", False), ("😀", False), ("", True)]
    # A stream that ends mid-character gets the held-back bytes as U+FFFD in the final response.
    responses = list(stub.DecodeStream(iter([pb.DecodeStreamRequest(ids=emoji[:1])]), timeout=10))
    assert [(r.text, r.final) for r in responses] == [("", False), ("\ufffd", True)]


def test_abandoned_decode_stream_is_cancelled_on_the_server(server, client, tiny_tokenizer):
    before = requests_total(server.metrics_port, "DecodeStream", "CANCELLED")
    pending: queue.SimpleQueue = queue.SimpleQueue()  # ids arriving from a model, as in the gateway
    stream = client.decode_stream(iter(pending.get, None))
    pending.put(tiny_tokenizer.encode("one"))
    assert next(stream) == "one"
    stream.close()  # the caller stops reading, e.g. its HTTP client disconnected
    pending.put(None)  # release gRPC's request-reading thread
    deadline = time.monotonic() + 5
    while requests_total(server.metrics_port, "DecodeStream", "CANCELLED") == before:
        assert time.monotonic() < deadline, "the server never saw the stream end"
        time.sleep(0.05)


# Any text the wire can carry (no lone surrogates: protobuf strings are UTF-8), emoji and CJK included.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60) | st.sampled_from(TEXTS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
def test_stream_decode_of_any_text_and_chunking(client, tiny_tokenizer, text, cuts):
    ids = client.encode(text)
    assert ids == tiny_tokenizer.encode(text)
    bounds = sorted({0, len(ids), *(c % (len(ids) + 1) for c in cuts)})
    chunks = [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    # A character split across a chunk boundary would surface as U+FFFD and break the equality.
    assert "".join(client.decode_stream(chunks)) == text
