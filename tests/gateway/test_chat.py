"""The chat API through the official openai SDK and as raw SSE, against a running gateway."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.gateway.conftest import CHECKPOINT


@pytest.fixture(scope="module")
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused-locally", max_retries=0)


def test_models_list_the_served_checkpoint(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["chatforge"]
    assert models[0].checkpoint == CHECKPOINT + "/step_000001"  # extra fields pass through the SDK
    assert client.models.retrieve("chatforge").id == "chatforge"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_non_streamed_completion(client, tiny_tokenizer):
    r = client.chat.completions.create(
        model="chatforge", messages=[{"role": "user", "content": "Hello there"}], max_tokens=12, temperature=0
    )
    assert r.object == "chat.completion"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    prompt = [{"role": "user", "content": "Hello there"}]
    from chatforge.chat import render_for_completion

    assert r.usage.prompt_tokens == len(render_for_completion(tiny_tokenizer, prompt))
    assert 1 <= r.usage.completion_tokens <= 12
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 12


def test_greedy_is_deterministic_and_streaming_matches(client):
    kwargs = dict(
        model="chatforge", messages=[{"role": "user", "content": "count"}], max_tokens=10, temperature=0
    )
    full = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert full.choices[0].message.content == again.choices[0].message.content
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_seeded_sampling_and_n_choices(client):
    kwargs = dict(
        model="chatforge",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=8,
        temperature=1.0,
        seed=7,
        n=2,
    )
    a = client.chat.completions.create(**kwargs)
    b = client.chat.completions.create(**kwargs)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_raw_sse_ends_with_done(gateway):
    body = {
        "model": "chatforge",
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "stream": True,
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [block for block in raw.split("\n\n") if block]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "usage" not in payloads[0]  # only with stream_options.include_usage


def test_stop_string_cuts_the_text(client):
    kwargs = dict(
        model="chatforge", messages=[{"role": "user", "content": "the model"}], max_tokens=20, temperature=0
    )
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    if len(full) < 4:
        pytest.skip(f"the random model's greedy answer {full!r} is too short to cut")
    stop = full[2:4]
    cut = client.chat.completions.create(**kwargs, stop=[stop]).choices[0]
    assert cut.message.content == full[: full.find(stop)]
    assert cut.finish_reason == "stop"


def test_checkpoints_listed_with_metrics(gateway):
    data = httpx.get(gateway.url + "/v1/checkpoints").json()["data"]
    by_id = {c["id"]: c for c in data}
    assert by_id["tiny/sft/step_000001"]["metrics"] == {"val_loss": 2.5}
    assert by_id["tiny/mid/step_000001"]["step"] == 1


def test_client_disconnect_cancels_generation(gateway):
    """Leaving a stream early ends the engine request: the stream count drops back to zero."""
    body = {
        "model": "chatforge",
        "messages": [{"role": "user", "content": "go"}],
        "max_tokens": 240,
        "stream": True,
    }
    aborted = gateway.state.inference._server.metrics.requests_finished.labels("abort")
    before = aborted._value.get()
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=30) as r:
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    import time

    state = gateway.state
    engine = state.inference._server.engine.engine
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        state.admission.running or state.metrics.streams_open._value.get() or engine.num_unfinished
    ):
        time.sleep(0.05)
    assert state.admission.running == 0
    assert state.metrics.streams_open._value.get() == 0
    assert aborted._value.get() == before + 1  # the engine aborted it, it did not run to the end
    assert engine.num_unfinished == 0


def test_tokenizer_service_decode_gives_the_same_text(gateway, launch):
    """The two stream decoders (the engine's, the tokenizer service's DecodeStream) agree."""
    via_service = launch(auth="off", detokenize="tokenizer")
    body = {
        "model": "chatforge",
        "messages": [{"role": "user", "content": "naïve café 😀"}],
        "max_tokens": 24,
        "temperature": 0,
    }
    engine_text = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30).json()
    service_text = httpx.post(via_service.url + "/v1/chat/completions", json=body, timeout=30).json()
    assert engine_text["choices"][0]["message"] == service_text["choices"][0]["message"]
    assert engine_text["usage"] == service_text["usage"]
    client = openai.OpenAI(base_url=via_service.url + "/v1", api_key="-", max_retries=0)
    chunks = client.chat.completions.create(**body, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == service_text["choices"][0]["message"]["content"]
    )
    # Abandoned streams must not pin the tokenizer service's worker threads (it has 8): after more
    # disconnects than that, generation still works.
    body_stream = {**body, "max_tokens": 200, "stream": True}
    for _ in range(10):
        with httpx.stream(
            "POST", via_service.url + "/v1/chat/completions", json=body_stream, timeout=30
        ) as r:
            next(r.iter_lines())
    after = httpx.post(via_service.url + "/v1/chat/completions", json=body, timeout=30).json()
    assert after["choices"][0]["message"] == service_text["choices"][0]["message"]
