"""Conversations in the real browser against the real gateway, with a scripted model: search by
title and text, export as Markdown and JSON, and the keyboard shortcuts with their help dialog."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest

from tests.web.scripted_chat import Gate, PythonRun, ask, finished

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect


def test_search_finds_conversations_by_title_and_by_text(chat) -> None:  # type: ignore[no-untyped-def]
    _, page, url = chat
    # Words no other test's conversation holds (the test gateways share one store).
    word, other = f"zebra{secrets.token_hex(3)}", f"quokka{secrets.token_hex(3)}"
    by_title = httpx.post(
        f"{url}/v1/conversations", json={"title": f"About the {word}", "messages": []}
    ).json()
    in_text = [
        {"role": "user", "content": "Tell me something"},
        {"role": "assistant", "content": f"A {word.upper()}!"},
    ]
    by_text = httpx.post(f"{url}/v1/conversations", json={"title": "Animals", "messages": in_text}).json()
    unrelated = httpx.post(
        f"{url}/v1/conversations", json={"title": f"About the {other}", "messages": []}
    ).json()
    page.reload()
    expect(page.locator(f'.conv-item[data-id="{unrelated["id"]}"]')).to_have_count(1)

    page.get_by_label("Search conversations").fill(word)
    listed = page.locator(".conv-item")
    expect(listed).to_have_count(2)
    assert listed.evaluate_all("items => items.map((i) => i.dataset.id)") == [by_text["id"], by_title["id"]]
    page.get_by_label("Search conversations").fill(f"{word}-nowhere")
    expect(page.locator(".conv-list")).to_have_text(f"No conversation mentions “{word}-nowhere”.")
    page.get_by_label("Search conversations").fill("")
    expect(page.locator(f'.conv-item[data-id="{unrelated["id"]}"]')).to_have_count(1)


def test_export_downloads_markdown_and_json(chat) -> None:  # type: ignore[no-untyped-def]
    model, page, url = chat
    model.reply("First answer.")
    model.reply(
        "Let me check.", PythonRun(code="print(6 * 7)", output="42\n", duration_s=0.5), " It is **42**."
    )
    ask(page, "Hello export")
    finished(page)
    page.locator("article.message.assistant").get_by_role("button", name="Regenerate reply").click()
    finished(page)
    # Renamed: the export is named after the title.
    page.get_by_role("button", name="Rename “Hello export”").click()
    page.get_by_label("New title").fill("Export me, please!")
    page.get_by_label("New title").press("Enter")
    expect(page.locator(".chat-title")).to_have_text("Export me, please!")

    with page.expect_download() as markdown:
        page.get_by_role("group", name="Export the conversation").get_by_role(
            "button", name="Markdown"
        ).click()
    assert markdown.value.suggested_filename == "export-me-please.md"
    text = open(markdown.value.path(), encoding="utf-8").read()
    assert text == (
        "# Export me, please!\n\n## You\n\nHello export\n\n## Assistant\n\nLet me check.\n\n"
        "```python\nprint(6 * 7)\n```\n\nOutput (ok, 0.50 s):\n\n```\n42\n```\n\n It is **42**.\n"
    )

    with page.expect_download() as exported:
        page.get_by_role("button", name="JSON").click()
    assert exported.value.suggested_filename == "export-me-please.json"
    record = json.loads(open(exported.value.path(), encoding="utf-8").read())
    assert record["id"] == page.url.rsplit("/", 1)[1] and record["title"] == "Export me, please!"
    question, answer = record["messages"]
    assert question == {"role": "user", "content": "Hello export"}
    assert answer["tool_runs"] == [{"outcome": "ok", "duration_s": 0.5, "message": ""}]
    assert [p["type"] for p in answer["content"]] == ["text", "python", "python_output", "text"]
    # The first reply, replaced by the regeneration, is exported as its alternative.
    assert answer["alternatives"] == {
        "index": 1,
        "others": [[{"role": "assistant", "content": "First answer."}]],
    }
    # The JSON is what the gateway stores.
    stored = httpx.get(f"{url}/v1/conversations/{record['id']}").json()
    assert stored["messages"] == record["messages"]


def test_keyboard_shortcuts_and_their_help_dialog(chat) -> None:  # type: ignore[no-untyped-def]
    model, page, _ = chat
    model.reply("Run this:\n\n```sh\necho first\n```\n\nor this:\n\n```sh\necho last\n```")
    ask(page, "Two commands")
    finished(page)

    # "?" outside a text field (and Ctrl+/ anywhere) opens the help, which lists every shortcut.
    page.get_by_label("Message", exact=True).press("?")
    expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()
    page.locator(".chat-title").click()
    page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    rows = dialog.locator("tbody tr")
    expect(rows.filter(has_text="New chat")).to_have_text(re.compile(r"Ctrl\+Shift\+O\s*New chat"))
    expect(rows.filter(has_text="Copy the last code block")).to_have_text(re.compile(r"Ctrl\+Shift\+;"))
    expect(rows.filter(has_text="Show these shortcuts")).to_have_text(re.compile(r"\? or Ctrl\+/"))
    expect(rows).to_have_count(9)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.get_by_label("Message", exact=True).press("Control+/")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Close").click()

    page.keyboard.press("Control+Shift+Semicolon")
    assert page.evaluate("navigator.clipboard.readText()") == "echo last"
    page.keyboard.press("Control+Shift+X")
    expect(page.locator(".toast").last).to_have_text("Copied the reply.")
    assert page.evaluate("navigator.clipboard.readText()").startswith("Run this:\n\n```sh\necho first")
    page.keyboard.press("Control+Shift+F")
    expect(page.get_by_label("Search conversations")).to_be_focused()
    page.locator(".chat-title").click()
    page.keyboard.press("/")
    expect(page.get_by_label("Message", exact=True)).to_be_focused()

    # Esc stops a reply mid-stream; the part that came is kept.
    gate = Gate()
    model.reply("A long story begins", gate, " and never ends.")
    ask(page, "Tell me a long story")
    reply = page.locator("article.message.assistant").last
    expect(reply.locator(".message-body")).to_have_text("A long story begins")
    page.keyboard.press("Escape")
    expect(reply.locator(".status")).to_have_text("Stopped.")
    gate.open()
    expect(page.get_by_role("button", name="Send")).to_be_visible()

    # Ctrl+Shift+O: a new, empty chat.
    expect(page).to_have_url(re.compile(r"#/chat/conv_[0-9a-f]+$"))
    page.keyboard.press("Control+Shift+O")
    expect(page).to_have_url(re.compile(r"#/chat$"))
    expect(page.locator("article.message")).to_have_count(0)
    expect(page.locator(".chat-title")).to_have_text("New chat")
