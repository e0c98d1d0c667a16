"""Replies rendered as Markdown while they stream, in the real browser against the real gateway,
with a scripted model (tests/web/scripted_chat.py): code highlighted with a copy button, math,
python runs as collapsible blocks, finished blocks never re-rendered, and hostile output inert."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator

import pytest

from tests.web.scripted_chat import Gate, PythonRun, ask, finished
from tests.web.test_a11y import audit

expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect


RICH_REPLY = """# Plan

Some **bold**, some `inline code`, and [a link](https://example.com/docs).

1. first
2. second

| n | square |
| --- | ---: |
| 3 | 9 |

```python
def square(x):
    return x * x  # the answer
```

Euler: $e^{i\\pi} + 1 = 0$, and it costs $5 or $10.
"""


def test_a_reply_renders_markdown_highlighted_code_math_and_python_runs(chat) -> None:  # type: ignore[no-untyped-def]
    model, page, _ = chat
    model.reply(
        RICH_REPLY,
        PythonRun(code="print(6 * 7)", output="42\n", duration_s=0.25),
        "Then a failing one:\n\n",
        PythonRun(
            code="while True: pass", output="", outcome="timeout", duration_s=5.0, message="killed after 5 s"
        ),
        "Done.",
    )
    ask(page, "Show me everything")
    reply = finished(page)
    body = reply.locator(".message-body")

    expect(body.locator("h1")).to_have_text("Plan")
    expect(body.locator("strong")).to_have_text("bold")
    expect(body.locator("p > code")).to_have_text("inline code")
    link = body.get_by_role("link", name="a link")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(body.locator("ol > li")).to_have_text(["first", "second"])
    expect(body.locator("td")).to_have_text(["3", "9"])

    # Fenced code: highlighted as Python, under a bar naming the language with a copy button.
    code = body.locator(".code-block")
    expect(code.locator(".code-lang")).to_have_text("python")
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(code.locator(".hljs-comment")).to_have_text("# the answer")
    # Math as MathML (KaTeX), while "$5 or $10" stays money.
    expect(body.locator(".math-inline math")).to_have_count(1)
    expect(body.locator(".math-inline annotation")).to_have_text(r"e^{i\pi} + 1 = 0")
    expect(body.locator("p", has_text="costs")).to_contain_text("costs $5 or $10.")

    # Python runs: collapsed to their outcome and duration; opened, the code and the output.
    runs = body.locator("details.tool")
    expect(runs).to_have_count(2)
    expect(runs.first.locator("summary")).to_have_text(re.compile(r"Python\s*ok\s*0\.25 s"))
    expect(runs.last.locator("summary")).to_have_text(re.compile(r"Python\s*timeout\s*5\.00 s"))
    expect(runs.first.locator(".tool-result")).not_to_be_visible()
    runs.first.locator("summary").click()
    expect(runs.first.locator(".tool-code .hljs-built_in")).to_have_text("print")
    expect(runs.first.locator(".tool-result")).to_have_text("42")
    runs.last.locator("summary").click()
    expect(runs.last.locator(".tool-result")).to_have_text("killed after 5 s")
    expect(runs.last).to_have_attribute("data-outcome", "timeout")

    # The copy button puts the code, as written, on the clipboard.
    code.get_by_role("button", name="Copy code").click()
    expect(page.locator(".toast").last).to_have_text("Copied the code.")
    assert page.evaluate("navigator.clipboard.readText()") == "def square(x):\n    return x * x  # the answer"

    # Stored with the sandbox's reports: a reload shows the same outcomes and durations.
    expect(page).to_have_url(re.compile(r"#/chat/conv_[0-9a-f]+$"))
    page.reload()
    runs = page.locator("article.message.assistant details.tool")
    expect(runs.last.locator("summary")).to_have_text(re.compile(r"Python\s*timeout\s*5\.00 s"))
    expect(page.locator("article.message.assistant .math-inline math")).to_have_count(1)

    # The audit the whole app passes (tests/web/test_a11y.py), on this reply in both themes, the
    # python runs open: syntax colours, outcomes and buttons keep their contrast and names.
    for theme in ("light", "dark"):
        page.evaluate("(theme) => localStorage.setItem('chatforge.theme', theme)", theme)
        page.reload()
        expect(page.locator("html")).to_have_attribute("data-theme", theme)
        for summary in page.locator("details.tool summary").all():
            summary.click()
        expect(page.locator(".hljs-keyword").first).to_be_visible()
        assert audit(page) == [], theme


def test_streaming_renders_incrementally_and_keeps_finished_blocks(chat) -> None:  # type: ignore[no-untyped-def]
    """Mid-stream the finished code block is on screen; it is the same DOM node at the end, never
    touched again, and the page did not shift. A reload renders the reply to the same DOM."""
    model, page, _ = chat
    first, second = Gate(), Gate()
    model.reply(
        "Here is the function:\n\n```js\nconst twice = (x) => 2 * x;\n```\n\nIt doubles",
        first,
        " its argument.\n\n- one\n- two",
        second,
        "\n- three\n\nThe end.",
    )
    page.evaluate(
        """() => {
        window.__shift = 0;
        window.__moved = [];
        new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) {
            window.__shift += entry.value;
            window.__moved.push(...entry.sources.map((s) => s.node?.outerHTML?.slice(0, 100)));
          }
        }).observe({ type: "layout-shift" });
    }"""
    )
    ask(page, "Write a function")
    reply = page.locator("article.message.assistant")
    expect(reply).to_have_attribute("aria-busy", "true")
    expect(reply.locator(".code-block code")).to_have_text("const twice = (x) => 2 * x;")
    expect(reply.locator(".md-piece").last).to_have_text("It doubles")
    block = reply.locator(".code-block").element_handle()
    top = block.evaluate("(n) => n.getBoundingClientRect().top")
    # Any change at all to the finished piece (its nodes, text or attributes) is recorded.
    block.evaluate(
        """(n) => {
        window.__touched = 0;
        new MutationObserver((records) => (window.__touched += records.length))
          .observe(n.closest(".md-piece"), { subtree: true, childList: true, characterData: true, attributes: true });
    }"""
    )
    first.open()
    expect(reply.locator("ul li")).to_have_text(["one", "two"])
    expect(reply).to_have_attribute("aria-busy", "true")
    second.open()
    finished(page)
    expect(reply.locator("ul li")).to_have_text(["one", "two", "three"])
    expect(reply.locator(".md-piece").last).to_have_text("The end.")

    assert block.evaluate("(n) => n.isConnected")
    assert block.evaluate("(n, now) => n === now", reply.locator(".code-block").element_handle())
    assert page.evaluate("window.__touched") == 0, "the finished code block's piece was re-rendered"
    assert block.evaluate("(n) => n.getBoundingClientRect().top") == top
    assert page.evaluate("window.__shift") == 0, f"moved while streaming: {page.evaluate('window.__moved')}"

    streamed = reply.locator(".message-body").inner_html()
    page.reload()
    expect(reply.locator(".md-piece").last).to_have_text("The end.")
    assert reply.locator(".message-body").inner_html() == streamed


# --- the sanitizer ---------------------------------------------------------------------------


class _Beacon:
    """An HTTP listener on loopback that records every request: anything the page fetches from it."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            do_POST = do_GET  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def beacon() -> Iterator[_Beacon]:
    listener = _Beacon()
    yield listener
    listener.close()


def attacks(url: str) -> str:
    """Hostile Markdown and HTML: each would run `window.__pwned = ...` or fetch from `url`."""
    return "\n\n".join(
        [
            "<script>window.__pwned = 'script'</script>",
            f'<img src="{url}/img-tag" onerror="window.__pwned = \'onerror\'">',
            f"![tracking pixel]({url}/md-image)",
            f'<img srcset="{url}/srcset 1x" alt="s">',
            "[click me](javascript:window.__pwned='js-link')",
            "<a href=\"javascript:window.__pwned='a-tag'\">tag link</a>",
            "<a href=\"jav&#x09;ascript:window.__pwned='entity'\">entity link</a>",
            '<a href="#" onclick="window.__pwned=\'onclick\'">handler link</a>',
            '<svg onload="window.__pwned=\'svg\'"><circle r="4"/></svg>',
            "<details open ontoggle=\"window.__pwned='ontoggle'\"><summary>s</summary>d</details>",
            f'<iframe src="{url}/iframe"></iframe>',
            f'<object data="{url}/object"></object><embed src="{url}/embed">',
            f'<video poster="{url}/poster" src="{url}/video"></video><audio src="{url}/audio" autoplay></audio>',
            f'<link rel="stylesheet" href="{url}/link-css"><style>@import url("{url}/style-import");</style>',
            f'<div style="background-image: url({url}/inline-style)">styled</div>',
            f'<table background="{url}/table-bg"><tr><td>t</td></tr></table>',
            f'<form action="{url}/form"><input type="image" src="{url}/input-image"><button>go</button></form>',
            f'<meta http-equiv="refresh" content="0; url={url}/refresh"><base href="{url}/base/">',
            f'<math><mtext><table><mglyph><style><img src="{url}/mxss" onerror="window.__pwned=\'mxss\'">',
            '<div class="toast error" id="prompt">a fake error in the page\'s style</div>',
        ]
    )


def test_hostile_replies_neither_run_nor_fetch(chat, beacon) -> None:  # type: ignore[no-untyped-def]
    model, page, _ = chat
    model.reply("Some content first.\n\n", attacks(beacon.url), "\n\nLast line.")
    ask(page, "Say something dangerous")
    reply = finished(page)
    body = reply.locator(".message-body")
    expect(body).to_contain_text("Last line.")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)  # anything queued (a lazy image, a refresh) gets its chance

    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert beacon.hits == [], f"the page fetched from the listener: {beacon.hits}"
    found = body.evaluate(
        """(root) => ({
        handlers: [...root.querySelectorAll("*")].flatMap((el) => [...el.attributes].map((a) => a.name))
          .filter((name) => name.startsWith("on")),
        tags: [...new Set([...root.querySelectorAll("script, style, iframe, object, embed, video, audio, link, meta, base, form, input, svg, math:not(.katex math)")].map((el) => el.tagName))],
        hrefs: [...root.querySelectorAll("a[href]")].map((a) => a.getAttribute("href")),
        rels: [...root.querySelectorAll("a[href]")].map((a) => a.rel),
        imgs: [...root.querySelectorAll("img")].map((img) => img.getAttribute("src")),
        styled: root.querySelectorAll("[style], [background], [srcset], [id], .toast").length,
    })"""
    )
    assert found["handlers"] == [] and found["tags"] == []
    # What links remain point at the listener (clicking opens it in a new tab) or within the page.
    assert found["hrefs"] == [f"{beacon.url}/img-tag", f"{beacon.url}/md-image", "#"]
    assert set(found["rels"]) == {"noopener noreferrer nofollow"}
    assert found["imgs"] == [] and found["styled"] == 0
    # The images are offered as links to them, unfetched; the javascript: links keep their text only.
    expect(body.get_by_role("link", name="🖼 tracking pixel")).to_have_attribute(
        "href", f"{beacon.url}/md-image"
    )
    for text in ("click me", "tag link", "entity link"):
        expect(body.get_by_text(text, exact=True)).to_have_count(1)
        expect(body.get_by_role("link", name=text)).to_have_count(0)
    page.reload()  # stored and drawn again: still inert
    expect(page.locator("article.message.assistant .message-body")).to_contain_text("Last line.")
    page.wait_for_timeout(300)
    assert page.evaluate("typeof window.__pwned") == "undefined" and beacon.hits == []
    # The control: the page can reach the listener, so the empty record above means something.
    page.evaluate("(url) => fetch(url, { mode: 'no-cors' })", f"{beacon.url}/control")
    assert beacon.hits == ["/control"]


# Markup that must not come out of the sanitizer, whatever went in.
INERT = (
    "<script",
    "<iframe",
    "<object",
    "<embed",
    "<style",
    "<form",
    "<svg",
    "<img",
    '="javascript',
    "style=",
)


def test_the_sanitizer_alone_holds_on_raw_html(chat, beacon) -> None:  # type: ignore[no-untyped-def]
    """The gate itself: sanitize() on hostile HTML (not Markdown) leaves nothing that runs or fetches."""
    _, page, _ = chat
    html = attacks(beacon.url).replace("\n\n", "")
    result = page.evaluate(
        """async (html) => {
        const { sanitize } = await import("/js/markdown.js");
        const div = document.createElement("div");
        div.append(sanitize(html));
        document.body.append(div);  // in the live page, where an <img> would load
        await new Promise((resolve) => setTimeout(resolve, 500));
        const out = {
          pwned: typeof window.__pwned,
          html: div.innerHTML,
          handlers: [...div.querySelectorAll("*")].some((el) => [...el.attributes].some((a) => a.name.startsWith("on"))),
        };
        div.remove();
        return out;
    }""",
        html,
    )
    assert result["pwned"] == "undefined" and not result["handlers"]
    assert beacon.hits == []
    # (Markdown syntax is only text here: "[click me](javascript:...)" stays as written, inert.)
    for gone in INERT:
        assert gone not in result["html"], f"{gone} survived: {result['html']}"
    assert re.findall(r'href="([^"]*)"', result["html"]) == [f"{beacon.url}/img-tag", "#"]
