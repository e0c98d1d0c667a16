"""The UI in a real browser against the real gateway (tiny model, real Redis, real job processes):
chat with a streamed reply, history that survives a reload, rename and delete, stop, the jobs,
models and reports pages."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.web.conftest import RUN, STAGE

CHECKPOINT = f"{RUN}/{STAGE}"


@pytest.fixture
def ui(page, gateway_url):  # type: ignore[no-untyped-def]
    page.goto(f"{gateway_url}/")
    return page


def _set_field(page, label: str, value: float) -> None:  # type: ignore[no-untyped-def]
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.dispatch_event("change")


def _greedy(page, max_tokens: int) -> None:  # type: ignore[no-untyped-def]
    """Temperature 0: the tiny model's greedy reply is never empty (see _save_tiny_checkpoint)."""
    expect(page.get_by_label("Model")).to_have_value("chatforge")
    _set_field(page, "Temperature", 0)
    _set_field(page, "Max tokens", max_tokens)


def test_chat_streams_a_reply_and_keeps_history_across_reloads(ui, tmp_path) -> None:  # type: ignore[no-untyped-def]
    page = ui
    _greedy(page, 24)
    streamed: list[str] = []
    page.on(
        "request",
        lambda r: streamed.append(r.post_data or "") if r.url.endswith("/v1/chat/completions") else None,
    )

    page.get_by_label("Message", exact=True).fill("Hello there, model")
    page.get_by_label("Message", exact=True).press("Enter")

    user = page.locator("article.message.user")
    expect(user).to_have_text(re.compile("Hello there, model"))
    reply = page.locator("article.message.assistant")
    expect(reply).to_have_count(1)
    expect(reply).not_to_have_attribute("aria-busy", "true", timeout=30_000)
    assert reply.locator(".message-body").inner_text().strip(), "the reply has text"
    assert '"stream":true' in streamed[0] and '"max_tokens":24' in streamed[0]

    # Saved server-side: the sidebar lists it, the address names it, and a reload brings it back.
    item = page.locator(".conv-item")
    expect(item).to_have_count(1)
    expect(item.locator(".conv-title")).to_have_text("Hello there, model")
    expect(page).to_have_url(re.compile(r"#/chat/conv_[0-9a-f]+$"))
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
    page.reload()
    expect(page.locator("article.message.user")).to_have_text(re.compile("Hello there, model"))
    expect(page.locator("article.message.assistant")).to_have_count(1)
    expect(page.locator(".conv-title")).to_have_text("Hello there, model")

    # Rename inline, then delete (confirming the browser's dialog).
    page.get_by_role("button", name="Rename “Hello there, model”").click()
    title = page.get_by_label("New title")
    title.fill("Greetings")
    title.press("Enter")
    expect(page.locator(".conv-title")).to_have_text("Greetings")
    page.reload()
    expect(page.locator(".conv-title")).to_have_text("Greetings")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete “Greetings”").click()
    expect(page.locator(".conv-list")).to_have_text("No conversations yet.")
    expect(page).to_have_url(re.compile(r"#/chat$"))
    expect(page.locator("article.message")).to_have_count(0)


def test_stop_aborts_the_stream_and_gives_the_message_back(ui) -> None:  # type: ignore[no-untyped-def]
    page = ui
    _greedy(page, 200)
    # Three seconds of emulated network latency: Stop is pressed before any reply byte arrives.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    slow = {"offline": False, "latency": 3000, "downloadThroughput": -1, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", slow)
    page.get_by_label("Message", exact=True).fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    expect(page.locator("article.message.assistant")).to_have_attribute("aria-busy", "true")
    stop.click()
    cdp.send("Network.emulateNetworkConditions", {**slow, "latency": 0})

    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(stop).to_be_hidden()
    expect(page.locator("article.message")).to_have_count(0)
    expect(page.get_by_label("Message", exact=True)).to_have_value("Tell me a long story")
    expect(page.locator(".toast")).to_have_text("Stopped.")
