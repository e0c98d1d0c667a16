"""Every client mistake gets the right 4xx with an OpenAI-shaped body; never a 500 or a trace."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

USER = [{"role": "user", "content": "hi"}]


def _post(gateway, body, **kwargs) -> httpx.Response:
    return httpx.post(gateway.url + "/v1/chat/completions", timeout=30, **({"json": body} | kwargs))


def _assert_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": USER}, "model"),
        ({"model": "chatforge"}, "messages"),
        ({"model": "chatforge", "messages": []}, "messages"),
        ({"model": "chatforge", "messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"model": "chatforge", "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"model": "chatforge", "messages": USER, "temperature": 3}, "temperature"),
        ({"model": "chatforge", "messages": USER, "top_p": 0}, "top_p"),
        ({"model": "chatforge", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"model": "chatforge", "messages": USER, "n": 0}, "n"),
        ({"model": "chatforge", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "chatforge", "messages": USER, "frobnicate": True}, "frobnicate"),
        ({"model": "chatforge", "messages": USER, "stream_options": {"include_usage": True}}, None),
        ({"model": "chatforge", "messages": USER, "logprobs": True}, "logprobs"),
        ({"model": "chatforge", "messages": USER, "max_tokens": 5, "max_completion_tokens": 6}, None),
        ({"model": "chatforge", "messages": "hello"}, "messages"),
        ([1, 2, 3], None),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(gateway, body, param):
    error = _assert_error(_post(gateway, body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_conversation_order_errors_come_from_the_chat_format(gateway):
    body = {"model": "chatforge", "messages": [{"role": "assistant", "content": "x"}]}
    error = _assert_error(_post(gateway, body), 400, code="invalid_messages")
    assert "expected role 'user'" in error["message"]
    ends_with_assistant = USER + [{"role": "assistant", "content": "y"}]
    _assert_error(_post(gateway, {"model": "chatforge", "messages": ends_with_assistant}), 400)


def test_a_bad_content_part_is_400_and_the_connection_stays_open(gateway):
    """The chat format's own error (a python part in a user message) answers 400 on a kept-alive
    connection, which then serves the next request: nothing re-raises past the handler."""
    bad = {"model": "chatforge", "messages": [{"role": "user", "content": [{"type": "python", "text": "1"}]}]}
    good = {"model": "chatforge", "messages": USER, "max_tokens": 2}
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for _ in range(2):
            error = _assert_error(client.post("/v1/chat/completions", json=bad), 400, code="invalid_messages")
            assert "messages[0]" in error["message"]
            assert client.post("/v1/chat/completions", json=good).status_code == 200


def test_malformed_json_is_400(gateway):
    r = _post(
        gateway,
        None,
        content=b'{"model": "chatforge", "messages": [',
        headers={"content-type": "application/json"},
    )
    _assert_error(r, 400, code="invalid_json")


def test_unknown_model_is_404(gateway):
    _assert_error(
        _post(gateway, {"model": "gpt-4", "messages": USER}), 404, code="model_not_found", param="model"
    )


def test_context_overflow_is_400(gateway):
    long = [{"role": "user", "content": "word " * 400}]  # ~400+ tokens, over the 256-token context
    error = _assert_error(
        _post(gateway, {"model": "chatforge", "messages": long}), 400, code="context_length_exceeded"
    )
    # The tokenizer service sends the count as a field (gRPC trailing metadata), not only in prose.
    counted = int(re.search(r"the messages take (\d+)", error["message"]).group(1))
    assert counted > 256
    too_many = {"model": "chatforge", "messages": USER, "max_tokens": 300}
    _assert_error(_post(gateway, too_many), 400, code="context_length_exceeded", param="max_tokens")


def test_limits_on_messages_characters_and_max_tokens(launch):
    strict = launch(
        auth="off", max_messages=3, max_message_chars=50, max_total_chars=80, max_tokens_limit=16, max_n=2
    )
    many = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2 + USER
    _assert_error(_post(strict, {"model": "chatforge", "messages": many}), 400, code="too_many_messages")
    long = [{"role": "user", "content": "x" * 51}]
    _assert_error(_post(strict, {"model": "chatforge", "messages": long}), 400, code="message_too_long")
    total = [
        {"role": "user", "content": "x" * 45},
        {"role": "assistant", "content": "y"},
        {"role": "user", "content": "z" * 45},
    ]
    _assert_error(_post(strict, {"model": "chatforge", "messages": total}), 400, code="messages_too_long")
    _assert_error(
        _post(strict, {"model": "chatforge", "messages": USER, "max_tokens": 17}),
        400,
        code="max_tokens_too_large",
    )
    _assert_error(_post(strict, {"model": "chatforge", "messages": USER, "n": 3}), 400, code="n_too_large")


def test_routes_and_methods(gateway):
    _assert_error(httpx.get(gateway.url + "/v1/nope"), 404)
    _assert_error(httpx.get(gateway.url + "/v1/chat/completions"), 405)
    _assert_error(httpx.get(gateway.url + "/v1/jobs/job-000000000000"), 404, code="job_not_found")
    _assert_error(
        httpx.get(gateway.url + "/v1/conversations/conv_missing"), 404, code="conversation_not_found"
    )
    _assert_error(httpx.post(gateway.url + "/v1/deployments", json={"checkpoint": "tiny/rl"}), 404)
    _assert_error(httpx.post(gateway.url + "/v1/deployments", json={"checkpoint": "../../etc"}), 404)


def test_sdk_raises_typed_errors(gateway):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="chatforge", messages=USER, temperature=5)
    assert info.value.body["param"] == "temperature"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=USER)
