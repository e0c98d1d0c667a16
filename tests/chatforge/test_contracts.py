"""The messages that cross process boundaries: defaults, strictness, and their wire forms."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from chatforge.contracts.errors import (
    GRPC_METADATA_KEY,
    ErrorDetail,
    ErrorKind,
    ServiceError,
    detail_from_validation,
    from_grpc_metadata,
    to_grpc_metadata,
)
from chatforge.contracts.generate import (
    ErrorEvent,
    FinishEvent,
    GenerateRequest,
    StreamItem,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)
from chatforge.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_K, SamplingParams


def test_sampling_has_one_set_of_documented_defaults():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.max_tokens) == (DEFAULT_TEMPERATURE, DEFAULT_TOP_K, 1.0, 256)
    assert not p.greedy and SamplingParams(temperature=0).greedy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "2"),  # no coercion from strings
        ("max_tokens", 0),
        ("temperature", True),
        ("temperature", 2.5),
        ("top_p", 0),
        ("top_k", -1),
        ("tools", "yes"),
        ("stop", ["x"] * 5),
        ("stop", [""]),
        ("stop_token_ids", [-1]),
        ("temprature", 1.0),  # a typo is an error, not a silently ignored field
    ],
)
def test_sampling_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ValidationError) as refused:
        SamplingParams.model_validate({field: value})
    assert detail_from_validation(refused.value).param == field


def test_sampling_copies_are_validated_and_immutable():
    p = SamplingParams(temperature=0.5, seed=3)
    assert p.with_(seed=4).seed == 4 and p.seed == 3
    with pytest.raises(ValidationError):
        p.with_(top_p=2.0)
    with pytest.raises(ValidationError):
        p.temperature = 1.0  # type: ignore[misc]


def test_generate_request_takes_exactly_one_prompt():
    assert GenerateRequest(prompt_ids=[1, 2]).sampling == SamplingParams()
    chat = GenerateRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})
    assert chat.prompt_ids is None
    for bad in ({}, {"prompt_ids": [1], "messages": [{"role": "user", "content": "x"}]}, {"prompt_ids": []}):
        with pytest.raises(ValidationError):
            GenerateRequest.model_validate(bad)
    with pytest.raises(ValidationError, match="sampling.temperature"):
        GenerateRequest.model_validate({"prompt_ids": [1], "sampling": {"temperature": "hot"}})
    # the wire form is what the gateway sends and the Serve app reads
    request = GenerateRequest(prompt_ids=[5, 6], sampling=SamplingParams(temperature=0, stop_token_ids=(3,)))
    assert GenerateRequest.model_validate_json(request.model_dump_json()) == request
    every_token = GenerateRequest(prompt_ids=[5], sampling=SamplingParams(top_k=None))
    assert GenerateRequest.model_validate_json(every_token.model_dump_json()).sampling.top_k is None


@pytest.mark.parametrize(
    "item",
    [
        StreamItem(token_id=7, text="hé"),
        StreamItem(token_id=9, forced=True),
        StreamItem(text="tail"),
        StreamItem(event=ToolCallEvent(code="print(1)")),
        StreamItem(event=ToolResultEvent(outcome="timeout", output="", duration_s=5.0, message="killed")),
        StreamItem(
            event=FinishEvent(finish_reason="length", usage=Usage(prompt_tokens=3, completion_tokens=4))
        ),
        StreamItem(event=ErrorEvent(error=ServiceError.unavailable("stopping").detail)),
    ],
)
def test_stream_items_survive_their_ndjson_line(item):
    line = item.to_json()
    assert "\n" not in line
    assert StreamItem.from_json(line) == item


def test_stream_items_say_when_they_are_last():
    finish = StreamItem(
        event=FinishEvent(finish_reason="stop", usage=Usage(prompt_tokens=1, completion_tokens=1))
    )
    error = StreamItem(event=ErrorEvent(error=ServiceError.invalid("no").detail))
    assert finish.is_last and error.is_last
    assert not StreamItem(token_id=1).is_last and not StreamItem(event=ToolCallEvent(code="")).is_last
    assert finish.event.usage.total_tokens == 2  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        StreamItem.from_json('{"event": {"kind": "surprise"}}')


def test_context_length_errors_carry_their_numbers_across_grpc_metadata():
    detail = ServiceError.context_length(300, 256).detail
    assert (detail.kind, detail.prompt_tokens, detail.context_length) == (
        ErrorKind.CONTEXT_LENGTH_EXCEEDED,
        300,
        256,
    )
    assert detail.http_status == 400 and detail.grpc_status == "INVALID_ARGUMENT"
    metadata = to_grpc_metadata(detail)
    assert metadata[0][0] == GRPC_METADATA_KEY and isinstance(metadata[0][1], bytes)
    assert from_grpc_metadata([("other", "x"), *metadata]) == detail
    assert from_grpc_metadata([(GRPC_METADATA_KEY, b"not json")]) is None
    assert from_grpc_metadata(None) is None


def test_error_details_tolerate_fields_from_a_newer_peer():
    newer = ErrorDetail.model_validate({"kind": "unavailable", "message": "later", "retry_after_s": 3})
    assert newer.kind is ErrorKind.UNAVAILABLE and newer.http_status == 503


def test_contracts_import_neither_torch_nor_a_service():
    code = (
        "import sys, chatforge.contracts.generate, chatforge.contracts.errors, chatforge.contracts.sampling;"
        "bad = [m for m in ('torch', 'ray', 'grpc', 'fastapi', 'trainer', 'gateway', 'inference_svc') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
