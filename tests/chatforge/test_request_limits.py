"""chatforge.request_limits, chatforge.body_limit and chatforge.contracts.strict: the pieces every HTTP
service bounds its requests with, tested without a server (the services' own tests send real ones)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from chatforge.body_limit import BodyLimit, BodyTooLarge
from chatforge.contracts.strict import StrictModel
from chatforge.request_limits import first_violation, limit, publish, violations


class Part(BaseModel):
    text: str = Field(json_schema_extra=limit(maxLength=("max_chars", "too_long")))


class Message(BaseModel):
    content: str | list[Part] = Field(
        json_schema_extra=limit(maxLength=("max_chars", "too_long"), maxItems=("max_parts", "too_many_parts"))
    )


class Request(BaseModel):
    n: int = Field(1, json_schema_extra=limit(maximum=("max_n", "n_too_large")))
    messages: list[Message] = Field(json_schema_extra=limit(maxItems=("max_messages", "too_many")))


SETTINGS = SimpleNamespace(max_chars=5, max_parts=2, max_n=3, max_messages=2)


def _request(**fields: Any) -> Request:
    return Request.model_validate({"messages": [{"content": "hi"}], **fields})


def test_a_request_within_its_settings_has_no_violation():
    assert first_violation(_request(n=3, messages=[{"content": [{"text": "abc"}] * 2}]), SETTINGS) is None


@pytest.mark.parametrize(
    ("fields", "param", "code", "message"),
    [
        ({"n": 4}, "n", "n_too_large", "n is 4, over the limit of 3 (max_n)"),
        ({"messages": [{"content": "x"}] * 3}, "messages", "too_many", "messages has 3 items"),
        ({"messages": [{"content": "toolong"}]}, "messages.0.content", "too_long", "7 characters"),
        ({"messages": [{"content": [{"text": "a"}] * 3}]}, "messages.0.content", "too_many_parts", "3 items"),
        ({"messages": [{"content": "ok"}, {"content": [{"text": "toolong"}]}]}, "messages.1.content.0.text",
         "too_long", "over the limit of 5 (max_chars)"),
    ],
)  # fmt: skip
def test_violations_name_the_field_the_setting_and_the_code(fields, param, code, message):
    found = first_violation(_request(**fields), SETTINGS)
    assert found is not None and (found.param, found.code) == (param, code) and message in found.message


def test_every_violation_is_found():
    request = _request(n=9, messages=[{"content": "toolong"}] * 3)
    assert [v.param for v in violations(request, SETTINGS)] == ["n", "messages"] + [
        f"messages.{i}.content" for i in range(3)
    ]


def test_publish_writes_the_settings_into_each_branch_of_its_type():
    schema = publish(Request.model_json_schema(), SETTINGS)
    assert schema["properties"]["n"]["maximum"] == 3
    content = schema["$defs"]["Message"]["properties"]["content"]
    string, array = content["anyOf"]
    assert (string["maxLength"], array["maxItems"]) == (5, 2)
    assert "maxItems" not in string and "maxLength" not in array
    assert content["x-limit"]["maxItems"] == {"setting": "max_parts", "code": "too_many_parts"}


def test_a_static_bound_below_the_setting_stays():
    class Capped(BaseModel):
        n: int = Field(1, le=2, json_schema_extra=limit(maximum=("max_n", "n_too_large")))

    assert publish(Capped.model_json_schema(), SETTINGS)["properties"]["n"]["maximum"] == 2


def test_limit_takes_known_keywords_only():
    with pytest.raises(ValueError, match="maxItems"):
        limit(maxSize=("x", "y"))


# --- StrictModel -----------------------------------------------------------------------------------


class Strict(StrictModel):
    count: int = 0
    maybe: int | None = None
    ratio: float = 0.0
    flag: bool = False


def test_strict_reads_json_as_json_schema_does():
    parsed = Strict.model_validate({"count": 2.0, "maybe": 3.0, "ratio": 1})
    assert (parsed.count, parsed.maybe, parsed.ratio) == (2, 3, 1.0) and type(parsed.count) is int
    for bad in ({"count": "2"}, {"count": 2.5}, {"maybe": "3"}, {"flag": "yes"}, {"flag": 1}, {"other": 1}):
        with pytest.raises(ValidationError):
            Strict.model_validate(bad)


# --- BodyLimit ----------------------------------------------------------------------------------


def _run(app_reads: bool, headers: list[tuple[bytes, bytes]], chunks: list[bytes], max_bytes: int = 10):
    """Drive BodyLimit around an app that reads the whole body and answers 200 (or answers at once)."""
    sent: list[dict[str, Any]] = []
    read: list[bytes] = []
    calls = {"app": 0}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls["app"] += 1
        if app_reads:
            try:
                while True:
                    message = await receive()
                    read.append(message.get("body", b""))
                    if not message.get("more_body"):
                        break
            except BodyTooLarge:
                await send({"type": "http.response.start", "status": 400, "headers": []})
                await send({"type": "http.response.body", "body": b"the app's answer to a failed read"})
                return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    limited = BodyLimit(app, max_bytes=max_bytes, error_body=lambda m: {"detail": m})
    asyncio.run(limited({"type": "http", "headers": headers}, receive, send))
    return sent, read, calls["app"], messages


def test_an_announced_oversize_body_is_413_before_the_app_runs():
    sent, read, calls, unread = _run(True, [(b"content-length", b"11")], [b"x" * 11])
    assert calls == 0 and read == [] and len(unread) == 1
    assert sent[0]["status"] == 413 and "11 bytes" in json.loads(sent[1]["body"])["detail"]


def test_a_chunked_body_is_413_once_it_passes_the_limit_and_the_rest_is_not_read():
    sent, read, calls, unread = _run(True, [], [b"x" * 6, b"x" * 6, b"x" * 6])
    assert calls == 1 and read == [b"x" * 6] and len(unread) == 1  # the third chunk never read
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert b"app's answer" not in b"".join(m.get("body", b"") for m in sent)


def test_a_body_within_the_limit_passes():
    sent, read, calls, _ = _run(True, [(b"content-length", b"10")], [b"x" * 5, b"x" * 5])
    assert calls == 1 and b"".join(read) == b"x" * 10 and sent[0]["status"] == 200
