"""The whole stack, end to end, through the gateway as a user's program meets it: the official
`openai` SDK for chat, the jobs, models and deployments API over HTTP, and every service's /metrics.

Nothing here is a stand-in: the gateway runs in its remote mode, the tokenizer service answers over
gRPC, the model is served by Ray Serve, python tool calls run in the sandbox service, the training
job runs on Ray through its Jobs API. The stack is `chatforge up` started by conftest.py, or one
named by CHATFORGE_E2E_URL (the docker compose stack; see README.md here).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import seed
from tests.e2e.conftest import Stack, deploy

pytestmark = pytest.mark.slow  # starts every service, Ray and Serve included: minutes on two cores

# A metric each service must expose (docs/architecture.md lists them all).
EXPECTED_METRICS = {
    "gateway": "chatforge_http_requests",
    "inference": "chatforge_inference_generation_tokens",
    "tokenizer": "chatforge_tokenizer_requests",
    "sandbox": "chatforge_sandbox_executions",
}


def openai_client(stack: Stack) -> OpenAI:
    # The SDK insists on a key; a gateway on 127.0.0.1 checks none, and any value does.
    return OpenAI(
        base_url=stack.api, api_key=stack.admin_key or "unused-on-loopback", max_retries=0, timeout=120
    )


def test_chat_not_streamed(served: Stack) -> None:
    reply = openai_client(served).chat.completions.create(
        model="chatforge", messages=[{"role": "user", "content": seed.HELLO_PROMPT}], temperature=0
    )
    choice = reply.choices[0]
    assert choice.message.content == seed.HELLO_ANSWER
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_chat_streamed(served: Stack) -> None:
    stream = openai_client(served).chat.completions.create(
        model="chatforge", messages=[{"role": "user", "content": seed.HELLO_PROMPT}], temperature=0,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    deltas, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(deltas) == seed.HELLO_ANSWER
    assert len(deltas) > 1  # it streamed, piece by piece
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens >= len(deltas)


def test_a_python_tool_call_runs_in_the_sandbox_service(served: Stack) -> None:
    before = sandbox_runs(served)
    reply = openai_client(served).chat.completions.create(
        model="chatforge", messages=[{"role": "user", "content": seed.TOOL_PROMPT}], temperature=0
    )
    message = reply.choices[0].message
    # The model wrote the call; the engine's tool loop sent it to the sandbox service, forced its
    # output back into the sequence, and the model answered from it.
    activity = (message.model_extra or {}).get("tool_activity")
    assert activity == [
        {"type": "python_call", "code": seed.TOOL_CODE},
        {"type": "python_output", "outcome": "ok", "output": seed.TOOL_OUTPUT,
         "duration_s": activity[1]["duration_s"], "message": ""},
    ], activity  # fmt: skip
    assert message.content == seed.TOOL_ANSWER
    assert sandbox_runs(served) == before + 1  # run by the sandbox service, not in process


def test_a_streamed_tool_call_shows_the_call_and_its_output(served: Stack) -> None:
    with served.client() as http, http.stream(
        "POST", "/v1/chat/completions",
        json={"model": "chatforge", "messages": [{"role": "user", "content": seed.TOOL_PROMPT}],
              "temperature": 0, "stream": True},
    ) as r:  # fmt: skip
        assert r.status_code == 200
        chunks = list(sse_data(r.iter_lines()))
    tools = [c["choices"][0]["delta"]["chatforge_tool"] for c in chunks if c.get("choices")
             and "chatforge_tool" in c["choices"][0]["delta"]]  # fmt: skip
    assert [t["type"] for t in tools][:1] == ["python_call"] and tools[0]["code"] == seed.TOOL_CODE, tools
    outputs = [t for t in tools if t["type"] == "python_output"]
    assert outputs and outputs[-1]["output"] == seed.TOOL_OUTPUT and outputs[-1]["outcome"] == "ok", tools
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert text == seed.TOOL_ANSWER


def test_every_service_exposes_its_metrics(served: Stack) -> None:
    with httpx.Client(timeout=30, trust_env=False) as http:
        openai_client(served).chat.completions.create(
            model="chatforge", messages=[{"role": "user", "content": seed.HELLO_PROMPT}], max_tokens=4
        )
        missing = sorted(set(EXPECTED_METRICS) - set(served.metrics))
        assert not missing, f"no /metrics URL for {missing}: set CHATFORGE_E2E_METRICS (tests/e2e/README.md)"
        for service, url in served.metrics.items():
            r = http.get(url)
            assert r.status_code == 200, f"{service} {url}: {r.status_code}"
            families = {f.name: f for f in text_string_to_metric_families(r.text)}
            name = EXPECTED_METRICS[service]
            assert name in families, f"{service} lacks {name}: {sorted(families)[:20]}"
            assert families[name].samples, f"{service}'s {name} has no samples"
            if service in ("gateway", "inference", "tokenizer"):  # the chat above went through them
                assert sum(s.value for s in families[name].samples) > 0, f"{service}'s {name} counted nothing"


def test_the_web_chat_is_served(stack: Stack) -> None:
    r = httpx.get(stack.url + "/", timeout=30, trust_env=False)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "<script" in r.text


def test_a_training_job_runs_and_its_checkpoint_serves(served: Stack) -> None:
    """Submit a smoke-sized base stage, follow its events to the end, find its checkpoint in the
    models list, deploy it, chat with it; then put the suite's model back."""
    run = f"e2e-smoke-{secrets.token_hex(3)}"
    spec = {"stage": "base", "run": run,
            "config": {"preset": "smoke", "tokenizer": seed.TOKENIZER, "corpus_dir": served.corpus_dir}}  # fmt: skip
    with served.client() as http:
        r = http.post("/v1/jobs", json=spec)
        assert r.status_code in (200, 201), r.text
        job = r.json()
        job_id = job["id"]

        events, states = [], []
        with http.stream(
            "GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(600, connect=10)
        ) as stream:
            assert stream.status_code == 200
            for event in sse_data(stream.iter_lines(), until_end=True):
                (states if event["type"] == "state" else events).append(event)
        final = http.get(f"/v1/jobs/{job_id}").json()
        assert final["state"] == "succeeded", (final, http.get(f"/v1/jobs/{job_id}/logs").text[-3000:])
        assert states[0]["state"] in ("queued", "running") and states[-1]["state"] == "succeeded", states
        kinds = [e["type"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "done", kinds
        steps = [e["step"] for e in events if e["type"] == "progress"]
        assert steps and steps == sorted(steps) and steps[-1] == 20, steps
        assert "checkpoint" in kinds

        checkpoints = {c["id"]: c for c in http.get("/v1/checkpoints").json()["data"]}
        ours = [c for name, c in checkpoints.items() if name.startswith(f"{run}/base/")]
        assert [c["step"] for c in ours][-1] == 20, ours
        assert ours[-1]["tokenizer"] == seed.TOKENIZER and ours[-1]["metrics"]

        try:
            record = deploy(http, f"{run}/base")
            assert record["checkpoint"] == ours[-1]["id"]
            models = http.get("/v1/models").json()["data"]
            assert models[0]["checkpoint"].startswith(f"{run}/base"), models
            reply = openai_client(served).chat.completions.create(
                model="chatforge",
                messages=[{"role": "user", "content": "Hello"}],
                max_tokens=8,
                temperature=0,
            )
            assert reply.usage is not None and reply.usage.completion_tokens > 0
            assert reply.choices[0].message.content != seed.HELLO_ANSWER  # a different model answers
        finally:
            deploy(http, seed.CHECKPOINT)


# --- helpers -------------------------------------------------------------------------------------------


def sandbox_runs(stack: Stack) -> float:
    """The sandbox service's count of finished runs (every outcome), from its /metrics."""
    url = stack.metrics.get("sandbox")
    assert url, "no /metrics URL for the sandbox: set CHATFORGE_E2E_METRICS (tests/e2e/README.md)"
    text = httpx.get(url, timeout=30, trust_env=False).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "chatforge_sandbox_executions":
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


def sse_data(lines: Iterator[str], *, until_end: bool = False) -> Iterator[dict]:
    """The JSON of each `data:` line of a server-sent event stream, up to `[DONE]` or `event: end`."""
    for line in lines:
        if line.startswith("event: end") and until_end:
            return
        if not line.startswith("data: "):
            continue
        data = line[len("data: ") :]
        if data == "[DONE]":
            return
        yield json.loads(data)
