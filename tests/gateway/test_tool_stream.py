"""Tool activity in the chat stream, end to end through HTTP and the openai SDK.

A random-weight model never writes a python block, so the engine is replaced through the gateway's
own seam (the `InferenceClient` protocol) by a stand-in that replays what the engine streams for a
tool call: the `<|python_start|>` code `<|python_end|>` ids with a tool_call event, the forced output
ids with a tool_result event, more text, then finish.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from gateway.inference import ModelInfo

from chatforge.contracts.generate import FinishEvent, StreamItem, ToolCallEvent, ToolResultEvent, Usage
from chatforge.contracts.sampling import SamplingParams

SEEN: list[SamplingParams] = []  # what reached the inference seam, request by request


class ScriptedInference:
    def __init__(self, items: list[StreamItem]):
        self.items = items

    def model_info(self) -> ModelInfo:
        return ModelInfo(id="chatforge", context_length=256, checkpoint="scripted/sft/step_000001", created=0)

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> AsyncIterator[StreamItem]:
        SEEN.append(sampling)
        for item in self.items:
            yield item

    async def deploy(self, checkpoint: str, progress: object = None) -> ModelInfo:
        return self.model_info()

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def tool_gateway(launch, tiny_tokenizer):
    tok, sp = tiny_tokenizer, tiny_tokenizer.special_ids
    ids = tok.encode

    def tokens(text: str) -> list[StreamItem]:
        return [StreamItem(token_id=t) for t in ids(text)]

    script = [
        *tokens("Let me compute."),
        StreamItem(token_id=sp["<|python_start|>"]),
        *tokens("print(6*7)"),
        StreamItem(token_id=sp["<|python_end|>"]),
        StreamItem(event=ToolCallEvent(code="print(6*7)")),
        StreamItem(event=ToolResultEvent(outcome="ok", output="42\n", duration_s=0.01)),
        *(
            StreamItem(token_id=t, forced=True)
            for t in [sp["<|output_start|>"], *ids("42\n"), sp["<|output_end|>"]]
        ),
        *tokens(" It is 42."),
        StreamItem(token_id=sp["<|assistant_end|>"]),
        StreamItem(
            event=FinishEvent(finish_reason="stop", usage=Usage(prompt_tokens=9, completion_tokens=40))
        ),
    ]

    async def scripted(settings):
        return ScriptedInference(script)

    return launch(auth="off", inference=scripted, detokenize="tokenizer")


def test_tool_calls_and_outputs_appear_in_the_stream(tool_gateway):
    body = {"model": "chatforge", "messages": [{"role": "user", "content": "6*7?"}], "stream": True}
    with httpx.stream("POST", tool_gateway.url + "/v1/chat/completions", json=body, timeout=30) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    tools = [d["chatforge_tool"] for d in deltas if "chatforge_tool" in d]
    assert tools == [
        {"type": "python_call", "code": "print(6*7)"},
        {"type": "python_output", "outcome": "ok", "output": "42\n", "duration_s": 0.01, "message": ""},
    ]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Let me compute. It is 42."  # code and tool output are not message text
    order = [
        ("tool" if "chatforge_tool" in d else "text")
        for d in deltas
        if d.get("content") or "chatforge_tool" in d
    ]
    assert order.index("tool") > 0 and order[-1] == "text"


def test_tool_activity_in_the_full_answer(tool_gateway):
    client = openai.OpenAI(base_url=tool_gateway.url + "/v1", api_key="-", max_retries=0)
    reply = client.chat.completions.create(model="chatforge", messages=[{"role": "user", "content": "6*7?"}])
    message = reply.choices[0].message
    assert message.content == "Let me compute. It is 42."
    assert [t["type"] for t in message.tool_activity] == ["python_call", "python_output"]
    assert reply.usage.completion_tokens == 40 and reply.choices[0].finish_reason == "stop"


def test_sampling_parameters_arrive_by_name(tool_gateway):
    """`temperature` in the OpenAI request is `SamplingParams.temperature` at the inference seam
    (and from there the engine's); an omitted field is the contract's one default."""
    client = openai.OpenAI(base_url=tool_gateway.url + "/v1", api_key="-", max_retries=0)
    messages = [{"role": "user", "content": "6*7?"}]
    SEEN.clear()
    client.chat.completions.create(
        model="chatforge", messages=messages, temperature=0.3, top_p=0.9, seed=5, extra_body={"top_k": 7}
    )
    client.chat.completions.create(model="chatforge", messages=messages)
    asked, omitted = SEEN
    assert (asked.temperature, asked.top_p, asked.top_k, asked.seed) == (0.3, 0.9, 7, 5)
    defaults = SamplingParams()
    assert (omitted.temperature, omitted.top_p, omitted.top_k, omitted.seed) == (
        defaults.temperature,
        defaults.top_p,
        defaults.top_k,
        None,
    )
