"""Limits before work: every oversize or over-count request is refused in bounded time and memory,
without a key before its body is read, whatever the body says about its own size.

Each limit is sent both ways a body can travel: with `Content-Length` and chunked (no length to
check up front). `tests/oversize.py` sends from a raw socket, reads the answer while it is still
sending, and records how much of the body had gone out when the answer came; `PeakRSS` records how
far this process's peak memory rose (the gateway under test runs in one of its threads).
"""

from __future__ import annotations

import json

import httpx
import pytest
from gateway.auth import KeyStore

from tests.gateway.conftest import PEPPER
from tests.oversize import MIB, PeakRSS, repeated, send

MODES = ["content-length", "chunked"]
BIG = 200 * MIB  # the size of the attack in issue 11
BODY_LIMIT = 2 * MIB  # the gateway's default max_body_bytes
BOUNDED_MIB = 32  # the most the peak may rise: a few buffers, far from the body's size
IN_FLIGHT = 8 * MIB  # what socket buffers may have taken when the answer came


@pytest.fixture(scope="module")
def guarded(launch):
    """Keys required, default limits but a small conversation size (to reach it in a test) and a
    write burst of 5 for the rate tests (each test uses its own keys: buckets are per key)."""
    return launch(
        auth="required",
        rate_request_burst=100_000,
        rate_requests_per_min=1e9,
        rate_write_burst=5,
        rate_writes_per_min=1,
        max_conversation_bytes=64 * 1024,
        max_conversation_bytes_per_key=256 * 1024,
    )


@pytest.fixture(scope="module")
def keys(redis_server) -> KeyStore:
    return KeyStore(redis_server, PEPPER)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _junk(size: int) -> tuple[object, int]:
    """`size` bytes that start like a chat request and never become valid JSON."""
    return repeated(b'{"model": "chatforge", "messages": [', b"x" * 1024, size // 1024, b"")


def _send(gateway, path, body_and_length, mode, **kwargs):
    body, length = body_and_length
    return send(gateway.url, path, body, length=length if mode == "content-length" else None, **kwargs)


def _error(sent, status: int, code: str | None = None) -> dict:
    assert sent.status == status, sent.body[:500]
    error = sent.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code, error
    return error


def _parts(n: int, text: str = "") -> dict:
    return {
        "model": "chatforge",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}] * n}],
    }


# --- authentication before the body ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("headers", "code"), [({}, "missing_api_key"), (_auth("cf-000000000000-forged"), "invalid_api_key")]
)
def test_without_a_valid_key_a_huge_body_is_401_before_it_is_read(guarded, mode, headers, code):
    with PeakRSS() as peak:
        sent = _send(guarded, "/v1/chat/completions", _junk(BIG), mode, headers=headers)
    _error(sent, 401, code)
    assert sent.headers["www-authenticate"] == "Bearer"
    assert sent.body_bytes < IN_FLIGHT, f"answered after {sent.body_bytes} bytes of {BIG}"
    assert sent.seconds < 5 and peak.grew_mib < BOUNDED_MIB, (sent.seconds, peak.grew_mib)


@pytest.mark.parametrize("mode", MODES)
def test_a_key_without_the_scope_is_403_before_the_body(guarded, keys, mode):
    chat_key, _ = keys.create("chat-only", ["chat"])
    sent = _send(guarded, "/v1/jobs", _junk(BIG), mode, headers=_auth(chat_key))
    _error(sent, 403, "insufficient_scope")
    assert sent.body_bytes < IN_FLIGHT


# --- the body's size, counted as it streams -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_huge_body_with_a_key_is_413_after_at_most_the_limit(guarded, keys, mode):
    key, _ = keys.create("big-body", ["chat"])
    with PeakRSS() as peak:
        sent = _send(guarded, "/v1/chat/completions", _junk(BIG), mode, headers=_auth(key))
    _error(sent, 413, "body_too_large")
    # Announced: refused before any of it is read. Chunked: refused once the limit is passed (the
    # rest is what socket buffers held when the answer came).
    most = IN_FLIGHT if mode == "content-length" else BODY_LIMIT + IN_FLIGHT
    assert sent.body_bytes < most, f"answered after {sent.body_bytes} bytes"
    assert sent.seconds < 5 and peak.grew_mib < BOUNDED_MIB, (sent.seconds, peak.grew_mib)


@pytest.mark.parametrize("mode", MODES)
def test_a_million_empty_parts_are_refused_fast(guarded, keys, mode):
    """Zero characters pass every character limit; the parts' bytes (26 MB) do not pass the body's."""
    key, _ = keys.create("million-parts", ["chat"])
    body = repeated(
        b'{"model": "chatforge", "messages": [{"role": "user", "content": [',
        b'{"type": "text", "text": ""},', 1_000_000, b'{"type": "text", "text": ""}]}]}',
    )  # fmt: skip
    with PeakRSS() as peak:
        sent = _send(guarded, "/v1/chat/completions", body, mode, headers=_auth(key))
    _error(sent, 413, "body_too_large")
    assert sent.seconds < 5 and peak.grew_mib < BOUNDED_MIB, (sent.seconds, peak.grew_mib)
    assert httpx.get(guarded.url + "/healthz", timeout=2).status_code == 200


# --- counts within the body's size ----------------------------------------------------------------


def _json_body(obj: object) -> tuple[list[bytes], int]:
    data = json.dumps(obj).encode()
    return [data[i : i + 65536] for i in range(0, len(data), 65536)], len(data)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        # as many empty parts as fit the body limit: counted, not rendered
        (_parts(60_000), "too_many_parts", "messages.0.content"),
        (_parts(65), "too_many_parts", "messages.0.content"),
        # 65 messages of 64 parts: each within max_parts_per_message, together over max_total_parts
        ({"model": "chatforge", "messages": _parts(64)["messages"] * 65}, "too_many_parts", "messages"),
        (
            {"model": "chatforge", "messages": [{"role": "user", "content": "x"}] * 257},
            "too_many_messages",
            "messages",
        ),
        ({"model": "chatforge", "messages": [{"role": "user", "content": "x" * 64_001}]}, "message_too_long",
         "messages.0.content"),
        ({"model": "chatforge", "messages": [{"role": "user", "content": "hi"}], "n": 5}, "n_too_large", "n"),
        (
            {"model": "chatforge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4097},
            "max_tokens_too_large",
            "max_tokens",
        ),
        ({"model": "chatforge", "messages": [{"role": "user", "content": "hi"}], "stop": ["a"] * 5}, None, "stop"),
    ],
)  # fmt: skip
def test_counts_and_sizes_within_the_body_are_400_naming_the_field(guarded, keys, mode, body, code, param):
    key, _ = keys.create("counts", ["chat"])
    sent = _send(guarded, "/v1/chat/completions", _json_body(body), mode, headers=_auth(key))
    error = _error(sent, 400, code)
    assert error["param"] == param
    assert sent.seconds < 3, sent.seconds


@pytest.mark.parametrize(
    ("field", "value"),
    [("stream", "yes"), ("n", "2"), ("temperature", "0.5"), ("tools_enabled", 1), ("max_tokens", 2.5)],
)
def test_types_are_strict(gateway, field, value):
    body = {"model": "chatforge", "messages": [{"role": "user", "content": "hi"}], field: value}
    r = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text


# --- conversations: size and shape, not key names --------------------------------------------------


def _conversation(messages: list[dict]) -> dict:
    return {"title": "t", "messages": messages}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("messages", "status", "code"),
    [
        ([{"role": "user", "content": "x" * 100_000}], 413, "conversation_too_large"),
        ([{"role": "user", "content": "x", "extra": "y" * 100_000}], 413, "conversation_too_large"),
        ([{"role": "user", "content": "x", "deep": json.loads("[" * 40 + "]" * 40)}], 400, "conversation_too_deep"),
        ([{"role": "user", "content": "x", "wide": [{"k": 1}] * 60_000}], 400, "conversation_too_many_keys"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}] * 501, 400, "too_many_messages"),
    ],
)  # fmt: skip
def test_conversations_are_bounded_in_size_and_shape(guarded, keys, mode, messages, status, code):
    key, _ = keys.create("conversation-limits", ["chat"])
    sent = _send(guarded, "/v1/conversations", _json_body(_conversation(messages)), mode, headers=_auth(key))
    _error(sent, status, code)
    assert httpx.get(guarded.url + "/v1/conversations", headers=_auth(key)).json()["data"] == []


def test_conversations_keep_unknown_keys_within_the_limits(guarded, keys):
    """The web UI stores its own per-message fields (alternatives, branches): kept as sent."""
    key, _ = keys.create("ui-fields", ["chat"])
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "alternatives": [{"content": "hey"}], "selected": 0},
    ]
    r = httpx.post(guarded.url + "/v1/conversations", json=_conversation(messages), headers=_auth(key))
    assert r.status_code == 201 and r.json()["messages"] == messages


def test_a_keys_conversations_are_capped_in_bytes_oldest_first(guarded, keys):
    """max_conversation_bytes_per_key (256 KiB here) evicts the oldest documents to fit a new one."""
    key, _ = keys.create("byte-budget", ["chat"])
    guarded_key = {"Authorization": f"Bearer {key}"}
    made = []
    for i in range(5):  # the write burst is 5
        body = _conversation([{"role": "user", "content": f"{i}" + "x" * 60_000}])
        r = httpx.post(guarded.url + "/v1/conversations", json=body, headers=guarded_key)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    kept = [c["id"] for c in httpx.get(guarded.url + "/v1/conversations", headers=guarded_key).json()["data"]]
    assert kept == made[::-1][:4]  # 4 x ~60 KB fit in 256 KiB; the first went


# --- rate limits on every route that writes, before the body --------------------------------------


def test_chat_completions_are_rate_limited_before_their_body(launch, keys):
    tight = launch(auth="required", rate_request_burst=2, rate_requests_per_min=1)
    key, _ = keys.create("chat-rate", ["chat"])
    body = {"model": "chatforge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for _ in range(2):
        assert (
            httpx.post(
                tight.url + "/v1/chat/completions", json=body, headers=_auth(key), timeout=30
            ).status_code
            == 200
        )
    sent = send(tight.url, "/v1/chat/completions", _junk(BIG)[0], length=BIG, headers=_auth(key))
    _error(sent, 429, "rate_limit_requests")
    assert sent.body_bytes < IN_FLIGHT and int(sent.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/conversations", {"title": "t"}),
        ("PATCH", "/v1/conversations/conv_missing", {"title": "t"}),
        ("DELETE", "/v1/conversations/conv_missing", None),
        ("POST", "/v1/jobs", {"stage": "nope"}),
        ("POST", "/v1/jobs/job-000000000000/cancel", None),
        ("POST", "/v1/deployments", {"checkpoint": "no/such"}),
        ("POST", "/v1/admin/keys", {"name": "x", "scopes": ["nope"]}),
        ("DELETE", "/v1/admin/keys/nope", None),
    ],
)
def test_every_write_is_rate_limited_before_its_body(guarded, keys, method, path, body):
    key, _ = keys.create("writer", ["admin"])
    with httpx.Client(base_url=guarded.url, headers=_auth(key), timeout=30) as client:
        statuses = [client.request(method, path, json=body).status_code for _ in range(5)]
        assert 429 not in statuses  # the burst
        limited = client.request(method, path, json=body)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_writes"
    assert int(limited.headers["Retry-After"]) >= 1
    if method != "DELETE":  # refused before a huge body is read
        sent = send(guarded.url, path, _junk(BIG)[0], length=BIG, method=method, headers=_auth(key))
        _error(sent, 429, "rate_limit_writes")
        assert sent.body_bytes < IN_FLIGHT
