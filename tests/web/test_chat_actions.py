"""Message actions in the real browser against the real gateway, with a scripted model: editing a
question forks the conversation, regenerating keeps every reply as an alternative, ‹ n/m › switches
between them, copy uses the clipboard, and all of it is stored by the gateway."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.scripted_chat import ask, finished

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect


def _texts(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.strip() for t in page.locator("article.message .message-body").all_inner_texts()]


def _stored(url: str, page) -> dict:  # type: ignore[no-untyped-def]
    conversation_id = page.url.rsplit("/", 1)[1]
    return httpx.get(f"{url}/v1/conversations/{conversation_id}").json()


def test_editing_a_question_forks_the_conversation_and_keeps_the_old_branch(chat) -> None:  # type: ignore[no-untyped-def]
    model, page, url = chat
    model.reply("Four.")
    model.reply("Six.")
    model.reply("Five.")
    ask(page, "What is 2+2?")
    finished(page)
    ask(page, "And 3+3?")
    finished(page)
    expect(page.locator("article.message.assistant")).to_have_count(2)

    question = page.locator("article.message.user").first
    question.get_by_role("button", name="Edit message").click()
    editor = question.get_by_role("textbox", name="Edited message")
    expect(editor).to_have_value("What is 2+2?")
    editor.fill("What is 2+3?")
    editor.press("Enter")
    finished(page)

    # The fork: the edited question and its new reply; what came after the old one is not shown.
    assert _texts(page) == ["What is 2+3?", "Five."]
    assert "What is 2+3?" in model.prompts[-1] and "2+2" not in model.prompts[-1]
    question = page.locator("article.message.user").first
    expect(question.locator(".alt-count")).to_have_text("2/2")

    # The old branch is kept, whole: back to it and forward again.
    question.get_by_role("button", name="Previous version").click()
    assert _texts(page) == ["What is 2+2?", "Four.", "And 3+3?", "Six."]
    expect(page.locator("article.message.user").first.locator(".alt-count")).to_have_text("1/2")
    expect(page.get_by_role("button", name="Previous version")).to_be_disabled()

    # Stored: the branch on screen is the conversation's plain messages; the other branch rides
    # beside the first question. A reload shows what was on screen, and switching still works.
    expect(page).to_have_url(re.compile(r"#/chat/conv_[0-9a-f]+$"))
    page.wait_for_load_state("networkidle")
    stored = _stored(url, page)
    assert [m["content"] for m in stored["messages"]] == ["What is 2+2?", "Four.", "And 3+3?", "Six."]
    assert stored["messages"][0]["alternatives"] == {
        "index": 0,
        "others": [[{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "Five."}]],
    }
    page.reload()
    expect(page.locator("article.message.user").first.locator(".alt-count")).to_have_text("1/2")
    assert _texts(page) == ["What is 2+2?", "Four.", "And 3+3?", "Six."]
    page.get_by_role("button", name="Next version").click()
    assert _texts(page) == ["What is 2+3?", "Five."]


def test_regenerating_keeps_every_reply_as_an_alternative(chat) -> None:  # type: ignore[no-untyped-def]
    model, page, url = chat
    for joke in ("Joke one.", "Joke **two**.", "Joke three."):
        model.reply(joke)
    ask(page, "Tell me a joke")
    reply = finished(page)
    expect(reply.locator(".alternatives")).to_have_count(0)  # one reply: no arrows

    reply.get_by_role("button", name="Regenerate reply").click()
    reply = finished(page)
    expect(reply.locator(".message-body")).to_have_text("Joke two.")
    expect(reply.locator(".alt-count")).to_have_text("2/2")
    # The same question again, without the reply it replaces.
    assert model.prompts[1] == model.prompts[0] and "Joke one" not in model.prompts[1]

    reply.get_by_role("button", name="Regenerate reply").click()
    reply = finished(page)
    expect(reply.locator(".alt-count")).to_have_text("3/3")
    reply.get_by_role("button", name="Previous version").click()
    reply = page.locator("article.message.assistant")
    expect(reply.locator(".message-body")).to_have_text("Joke two.")
    expect(reply.locator(".alt-count")).to_have_text("2/3")

    # Copy puts the reply on the clipboard as Markdown, as the model wrote it.
    reply.get_by_role("button", name="Copy message").click()
    expect(page.locator(".toast").last).to_have_text("Copied the message.")
    assert page.evaluate("navigator.clipboard.readText()") == "Joke **two**."

    page.wait_for_load_state("networkidle")
    page.reload()
    reply = page.locator("article.message.assistant")
    expect(reply.locator(".alt-count")).to_have_text("2/3")
    reply.get_by_role("button", name="Next version").click()
    expect(page.locator("article.message.assistant .message-body")).to_have_text("Joke three.")
    stored = _stored(url, page)
    assert [m["content"] for m in stored["messages"]] == ["Tell me a joke", "Joke three."]


def test_a_regeneration_that_gets_nothing_leaves_the_reply_as_it_was(chat) -> None:  # type: ignore[no-untyped-def]
    model, page, url = chat
    model.reply("The only answer.")
    ask(page, "Answer once")
    reply = finished(page)
    # max_tokens past the context: the gateway refuses, no reply comes back.
    field = page.get_by_label("Max tokens", exact=True)
    field.fill("4096")
    field.dispatch_event("change")
    model.reply("never sent")
    reply.get_by_role("button", name="Regenerate reply").click()
    expect(page.locator(".toast.error")).to_contain_text("max_tokens")
    expect(page.locator("article.message.assistant .message-body")).to_have_text("The only answer.")
    expect(page.locator("article.message.assistant .alternatives")).to_have_count(0)
    page.wait_for_load_state("networkidle")
    assert [m["content"] for m in _stored(url, page)["messages"]] == ["Answer once", "The only answer."]
