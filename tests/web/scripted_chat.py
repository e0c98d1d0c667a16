"""A stand-in model for the chat page's tests: replies the test writes, streamed through the real
gateway, SSE and browser.

A random-weight model never writes Markdown, code fences or python calls, so the engine is replaced
through the gateway's own seam (the `InferenceClient` protocol, as in tests/gateway/test_tool_stream.py)
by one that replays scripted replies as the engine streams them: real `StreamItem`s, text as the
real tokenizer's ids (the gateway detokenizes them), a python run as <|python_start|> code
<|python_end|> with its tool_call and tool_result events and the forced output ids, then finish.
A reply can stop at a `Gate` until the test opens it, to look at the page mid-stream.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.inference import ModelInfo

from chatforge.contracts.generate import FinishEvent, StreamItem, ToolCallEvent, ToolResultEvent, Usage
from chatforge.contracts.sampling import SamplingParams
from chatforge.tools import Outcome

if TYPE_CHECKING:  # playwright is a dev dependency: the tests skip without it
    from playwright.sync_api import Locator, Page

GATE_TIMEOUT_S = 30.0
DEFAULT_REPLY = "Scripted reply."


@dataclass
class Gate:
    """A point where the reply waits until the test calls open()."""

    event: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        self.event.set()


@dataclass
class PythonRun:
    """A python tool call and the sandbox's answer, as the engine's tool loop streams them."""

    code: str
    output: str
    outcome: Outcome = "ok"
    duration_s: float = 0.01
    message: str = ""


Step = str | Gate | PythonRun


class ScriptedChat:
    """An InferenceClient whose replies are queued by the test: each request takes the next one
    (a list of steps), or a short default reply when none is queued."""

    def __init__(self, tokenizer: object, token_delay_s: float = 0.0):
        self.tokenizer = tokenizer
        self.token_delay_s = token_delay_s
        self.replies: deque[list[Step]] = deque()
        self.prompts: list[str] = []  # each request's rendered prompt, as the model would read it

    def reply(self, *steps: Step) -> None:
        self.replies.append(list(steps))

    def model_info(self) -> ModelInfo:
        return ModelInfo(
            id="chatforge", context_length=4096, checkpoint="scripted/sft/step_000001", created=0
        )

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> AsyncIterator[StreamItem]:
        self.prompts.append(self.tokenizer.decode(prompt_ids))  # type: ignore[attr-defined]
        steps = self.replies.popleft() if self.replies else [DEFAULT_REPLY]
        count = 0
        for step in steps:
            for item in await self._items(step):
                count += item.token_id is not None
                yield item
                await asyncio.sleep(self.token_delay_s)
        specials = self.tokenizer.special_ids  # type: ignore[attr-defined]
        yield StreamItem(token_id=specials["<|assistant_end|>"])
        usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=count + 1)
        yield StreamItem(event=FinishEvent(finish_reason="stop", usage=usage))

    async def deploy(self, checkpoint: str, progress: Any = None) -> ModelInfo:
        return self.model_info()

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _items(self, step: Step) -> list[StreamItem]:
        encode = self.tokenizer.encode  # type: ignore[attr-defined]
        if isinstance(step, str):
            return [StreamItem(token_id=t) for t in encode(step)]
        if isinstance(step, Gate):
            # Polled, not awaited in a thread: a request the page aborts is cancelled right here.
            for _ in range(int(GATE_TIMEOUT_S / 0.02)):
                if step.event.is_set():
                    return []
                await asyncio.sleep(0.02)
            raise TimeoutError("the test never opened the gate")
        sp = self.tokenizer.special_ids  # type: ignore[attr-defined]
        result = ToolResultEvent(
            outcome=step.outcome, output=step.output, duration_s=step.duration_s, message=step.message
        )
        return [
            StreamItem(token_id=sp["<|python_start|>"]),
            *(StreamItem(token_id=t) for t in encode(step.code)),
            StreamItem(token_id=sp["<|python_end|>"]),
            StreamItem(event=ToolCallEvent(code=step.code)),
            StreamItem(event=result),
            *(
                StreamItem(token_id=t, forced=True)
                for t in [sp["<|output_start|>"], *encode(step.output), sp["<|output_end|>"]]
            ),
        ]


def launch_scripted(launch_gateway: Any, tokenizer: object) -> tuple[ScriptedChat, str]:
    """A gateway (from conftest's launch_gateway) whose model is a new ScriptedChat: (chat, url)."""
    chat = ScriptedChat(tokenizer)

    async def factory(settings: object) -> ScriptedChat:
        return chat

    # The stand-in streams ids only: the gateway's tokenizer turns them into text.
    gateway = launch_gateway(auth="off", inference=factory, detokenize="tokenizer")
    return chat, gateway.url


# --- driving the chat page ------------------------------------------------------------------------


def open_chat(model: ScriptedChat, url: str, page: Page) -> Page:
    """The chat page on the scripted gateway with the clipboard allowed and the model's queue empty."""
    from playwright.sync_api import expect

    model.replies.clear()
    model.prompts.clear()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page.goto(f"{url}/#/chat")
    expect(page.get_by_label("Model")).to_have_value("chatforge")
    return page


def ask(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def finished(page: Page) -> Locator:
    """The last reply, once it has finished streaming (its actions are shown)."""
    from playwright.sync_api import expect

    reply = page.locator("article.message.assistant").last
    expect(reply).not_to_have_attribute("aria-busy", "true")
    expect(reply.get_by_role("button", name="Copy message")).to_be_visible()
    return reply
