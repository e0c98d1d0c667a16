"""The UI in a real browser against the real gateway (tiny model, real Redis, real job processes):
chat with a streamed reply, history that survives a reload, rename and delete, stop, the jobs,
models and reports pages."""

from __future__ import annotations

import re

import pytest

from tests.web.conftest import METRICS, RUN, STAGE
from tests.web.tcp_proxy import TcpProxy

# Without playwright the module skips, with the reason in pytest's summary (-ra).
expect = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])"
).expect

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


def _chat_requests(page) -> list[str]:  # type: ignore[no-untyped-def]
    """The bodies of the chat-completion requests the page sends from now on, in order."""
    bodies: list[str] = []
    page.on(
        "request",
        lambda r: bodies.append(r.post_data or "") if r.url.endswith("/v1/chat/completions") else None,
    )
    return bodies


def test_chat_streams_a_reply_and_keeps_history_across_reloads(ui, tmp_path) -> None:  # type: ignore[no-untyped-def]
    page = ui
    _greedy(page, 24)
    streamed = _chat_requests(page)

    page.get_by_label("Message", exact=True).fill("Hello there, model")
    page.get_by_label("Message", exact=True).press("Enter")

    user = page.locator("article.message.user")
    expect(user).to_have_text(re.compile("Hello there, model"))
    reply = page.locator("article.message.assistant")
    expect(reply).to_have_count(1)
    expect(reply).not_to_have_attribute("aria-busy", "true", timeout=30_000)
    assert reply.locator(".message-body").inner_text().strip(), "the reply has text"
    expect(reply.locator(".status")).to_have_text("Stopped at the max tokens limit. · 24 tokens")
    assert '"stream":true' in streamed[0] and '"max_tokens":24' in streamed[0]

    # Saved server-side: the sidebar lists it, the address names it, and a reload brings it back.
    # The current conversation is marked in the sidebar (other tests' conversations may be listed too).
    current = page.locator('.conv-title[aria-current="page"]')
    expect(current).to_have_text("Hello there, model")
    expect(page).to_have_url(re.compile(r"#/chat/conv_[0-9a-f]+$"))
    address = page.url

    # A second turn goes into the same conversation (the history is sent back and saved again).
    page.get_by_label("Message", exact=True).fill("And again")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator("article.message.assistant")).to_have_count(2)
    expect(page.locator("article.message.assistant").last).not_to_have_attribute("aria-busy", "true")
    assert '"content":"Hello there, model"' in streamed[1], "the first turn is sent back"
    expect(page.locator(".conv-title", has_text="Hello there, model")).to_have_count(1)
    assert page.url == address
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    page.reload()
    expect(page.locator("article.message.user .text")).to_have_text(["Hello there, model", "And again"])
    expect(page.locator("article.message.assistant")).to_have_count(2)
    expect(current).to_have_text("Hello there, model")

    # Rename inline, then delete (confirming the browser's dialog).
    page.get_by_role("button", name="Rename “Hello there, model”").click()
    title = page.get_by_label("New title")
    title.fill("Greetings")
    title.press("Enter")
    expect(current).to_have_text("Greetings")
    page.reload()
    expect(current).to_have_text("Greetings")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete “Greetings”").click()
    expect(page.locator(".conv-title", has_text="Greetings")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"#/chat$"))
    expect(page.locator("article.message")).to_have_count(0)


def test_default_max_tokens_is_auto_and_fits_the_models_context(ui) -> None:  # type: ignore[no-untyped-def]
    """A fresh page leaves Max tokens blank ("auto"): the request carries no max_tokens, the gateway
    allows what the context leaves, and the first message works on a small-context model."""
    page = ui
    expect(page.get_by_label("Max tokens", exact=True)).to_have_value("")
    expect(page.get_by_label("Max tokens", exact=True)).to_have_attribute("placeholder", "auto")
    # Temperature and top p are blank too: the server's one sampling default applies.
    for label in ("Temperature", "Top p"):
        expect(page.get_by_label(label, exact=True)).to_have_value("")
        expect(page.get_by_label(label, exact=True)).to_have_attribute("placeholder", "default")
    sent = _chat_requests(page)
    page.get_by_label("Message", exact=True).fill("Hi")
    page.get_by_label("Message", exact=True).press("Enter")
    reply = page.locator("article.message.assistant")
    expect(reply).not_to_have_attribute("aria-busy", "true", timeout=60_000)
    expect(reply.locator(".status")).not_to_contain_text("Error")
    expect(page.locator(".toast.error")).to_have_count(0)
    assert sent and all(f'"{name}"' not in sent[0] for name in ("max_tokens", "temperature", "top_p"))


def test_a_message_sent_before_the_models_load_waits_for_them(page, gateway_url) -> None:  # type: ignore[no-untyped-def]
    """Enter pressed while the model list is still loading sends once it has loaded (it was refused
    with "No model to send to", the message left in the composer)."""
    held = []
    page.route("**/v1/models", lambda route: held.append(route))
    page.goto(f"{gateway_url}/")
    page.get_by_label("Message", exact=True).fill("Hi")
    page.get_by_label("Message", exact=True).press("Enter")
    page.wait_for_timeout(300)  # the keypress handled while the list is held
    assert held, "the page did not ask for the models"
    for route in held:
        route.continue_()
    page.unroute("**/v1/models")
    reply = page.locator("article.message.assistant")
    expect(reply).to_have_count(1, timeout=30_000)
    expect(reply).not_to_have_attribute("aria-busy", "true", timeout=60_000)
    expect(page.locator(".toast.error")).to_have_count(0)
    expect(page.get_by_label("Message", exact=True)).to_have_value("")


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_aborts_the_stream_and_gives_the_message_back(ui, how) -> None:  # type: ignore[no-untyped-def]
    page = ui
    _greedy(page, 200)
    # Ten seconds of emulated network latency: Stop is pressed before any reply byte arrives.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    slow = {"offline": False, "latency": 10_000, "downloadThroughput": -1, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", slow)
    page.get_by_label("Message", exact=True).fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    expect(page.locator("article.message.assistant")).to_have_attribute("aria-busy", "true")
    if how == "button":
        stop.click()
    else:
        page.keyboard.press("Escape")
    cdp.send("Network.emulateNetworkConditions", {**slow, "latency": 0})

    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(stop).to_be_hidden()
    expect(page.locator("article.message")).to_have_count(0)
    expect(page.get_by_label("Message", exact=True)).to_have_value("Tell me a long story")
    expect(page.locator(".toast")).to_have_text("Stopped.")


def test_jobs_page_submits_follows_and_cancels_a_job(page, gateway_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proxy = TcpProxy(int(gateway_url.rsplit(":", 1)[1]))
    try:
        _follow_a_job(page, f"http://127.0.0.1:{proxy.port}", tmp_path, proxy)
    finally:
        proxy.close()


def _follow_a_job(page, url, tmp_path, proxy) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{url}/")
    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Training jobs")).to_be_visible()
    page.get_by_label("Stage").select_option("base")
    page.get_by_label("Run name").fill(RUN)
    page.get_by_label("Steps").fill("10")
    page.get_by_label("Depth").fill("2")
    page.get_by_label("Other flags (JSON object, optional)").fill('{"seed": 3}')
    page.get_by_role("button", name="Submit").click()

    row = page.locator(".jobs-table tbody tr").first
    expect(row).to_contain_text(f"base · {RUN}")
    expect(row.locator(".badge")).to_have_text(re.compile("queued|running"))
    page.screenshot(path=str(tmp_path / "jobs.png"), full_page=True)
    row.get_by_role("link").click()

    # Live from the job's event stream: the job process reported 3 of 10 steps.
    expect(page.get_by_text("Stage base: step 3 of 10")).to_be_visible()
    expect(page.locator(".stat", has_text="Loss")).to_contain_text("3.25")
    expect(page.locator(".event-log")).to_contain_text("start stage=base step=0 num_steps=10")
    expect(page.locator(".badge")).to_have_text("running")

    # The connection drops: the page reconnects and asks for the events after the last one it saw.
    assert proxy.cut() >= 1
    expect(page.locator(".toast", has_text="reconnecting")).to_be_visible()
    expect(page.locator(".event-log li", has_text="state=running")).to_have_count(1)
    expect(page.locator(".event-log li", has_text="progress")).to_have_count(3)  # none twice
    page.get_by_role("button", name="Refresh logs").click()
    expect(page.locator("pre.logs")).to_contain_text(f"[{RUN}/base] step 3/10")
    expect(page.locator("pre", has_text="job_script.py")).to_contain_text("--depth 2 --num-steps 10 --seed 3")
    expect(page.locator(".artifacts-table tbody tr")).to_contain_text(f"{CHECKPOINT}/step_000001")
    expect(page.locator(".artifacts-table tbody tr")).to_contain_text("val_bpb 1.234")
    page.screenshot(path=str(tmp_path / "job.png"), full_page=True)

    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator(".badge")).to_have_text("cancelled")
    expect(page.locator(".event-log li", has_text="state=cancelled")).to_have_count(
        1
    )  # live, after the reconnect
    expect(page.get_by_role("button", name="Cancel job")).to_be_hidden()


def test_models_page_lists_checkpoints_with_metrics_and_deploys(ui, tmp_path) -> None:  # type: ignore[no-untyped-def]
    page = ui
    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("heading", name="Served now")).to_be_visible()
    expect(page.locator("main li").first).to_contain_text(f"chatforge — checkpoint {CHECKPOINT}")
    row = page.locator(".checkpoints-table tbody tr", has_text=CHECKPOINT)
    expect(row).to_have_count(1)
    header = page.locator(".checkpoints-table thead")
    for name, value in METRICS.items():
        expect(header).to_contain_text(name)
        expect(row).to_contain_text(str(value))
    # The trainer records the step among the metrics too: it is shown once, in its own column.
    expect(header.locator("th", has_text=re.compile("^step$", re.IGNORECASE))).to_have_count(1)
    page.screenshot(path=str(tmp_path / "models.png"), full_page=True)
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Deploy").click()
    expect(page.locator(".toast")).to_contain_text("Deployed")


def test_api_key_is_asked_for_kept_in_local_storage_and_scoped(page, launch_gateway) -> None:  # type: ignore[no-untyped-def]
    from gateway.auth import KeyStore

    gateway = launch_gateway(auth="required")
    key, _ = KeyStore(gateway.state.redis, gateway.settings.key_pepper).create("web-ui", ["chat"])
    page.goto(f"{gateway.url}/")
    dialog = page.get_by_role("dialog", name="API key")
    expect(dialog).to_be_visible()  # the first 401 opens it
    dialog.get_by_label("Key").fill(key)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_label("Model")).to_have_value("chatforge")
    assert page.evaluate("localStorage.getItem('chatforge.apiKey')") == key

    page.reload()
    expect(page.get_by_label("Model")).to_have_value("chatforge")
    expect(page.get_by_role("button", name="API key ✓")).to_be_visible()
    expect(dialog).to_be_hidden()

    # A chat key on the admin-only jobs page: told why, not asked for a key again.
    page.get_by_role("link", name="Jobs").click()
    expect(page.locator(".toast.error").last).to_contain_text("admin")
    expect(page.locator(".jobs-card")).to_contain_text("Could not load jobs")
    expect(dialog).to_be_hidden()


def test_reports_page_renders_a_run_report_card_with_its_plots(ui, tmp_path) -> None:  # type: ignore[no-untyped-def]
    page = ui
    page.get_by_role("link", name="Reports").click()
    page.get_by_role("link", name=RUN).click()
    report = page.get_by_role("article", name=f"Report for {RUN}")
    expect(report.locator("h1")).to_have_text(f"chatforge report card: run {RUN}")
    expect(report.locator("h2", has_text="Summary")).to_be_visible()
    summary = report.locator("table").last
    expect(summary.locator("tbody tr")).to_have_text([re.compile(rf"^\s*{STAGE}\s*1\s*2,048")])
    plot = report.get_by_role("img", name="loss")
    expect(plot).to_have_attribute("src", re.compile("^blob:"))  # fetched with the API key, then shown
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)


def test_each_page_names_its_controls_and_fits_a_dark_small_screen(browser, gateway_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import httpx

    # A job, so the jobs page has its (wide) table whatever ran before.
    job = httpx.post(f"{gateway_url}/v1/jobs", json={"stage": "mid", "run": RUN}).json()
    context = browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark")
    page = context.new_page()
    try:
        for view in ("chat", "jobs", "models", "reports"):
            page.goto(f"{gateway_url}/#/{view}")
            expect(page.locator(f'main[data-view="{view}"] h1')).to_have_count(1)
            if view == "jobs":
                expect(page.locator(".jobs-table")).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(tmp_path / f"{view}-dark-small.png"), full_page=True)
            background = page.evaluate("getComputedStyle(document.body).backgroundColor")
            channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
            assert max(channels) < 64, f"dark scheme asked for, body background is {background}"
            # Nothing reaches past the screen's right edge, except inside what scrolls by design.
            wide = page.evaluate(
                """() => [...document.querySelectorAll("body *")]
                    .filter((el) => !el.closest(".table-scroll, pre, .visually-hidden, dialog"))
                    .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1)
                    .map((el) => el.tagName + "." + el.className)"""
            )
            assert wide == [], f"{view}: wider than a 390px screen: {wide[:5]}"
            # Every control has a name a screen reader can say.
            unnamed = page.evaluate(
                """() => [...document.querySelectorAll("input, select, textarea, button, a[href]")]
                    .filter((el) => !(el.labels?.length || el.getAttribute("aria-label") || el.textContent.trim()))
                    .map((el) => el.outerHTML)"""
            )
            assert unnamed == [], f"{view}: controls without an accessible name: {unnamed}"
    finally:
        context.close()
        httpx.post(f"{gateway_url}/v1/jobs/{job['id']}/cancel")


def test_stop_half_way_keeps_the_partial_reply(page, gateway_url) -> None:  # type: ignore[no-untyped-def]
    proxy = TcpProxy(int(gateway_url.rsplit(":", 1)[1]))
    try:
        page.goto(f"http://127.0.0.1:{proxy.port}/")
        _greedy(page, 200)
        proxy.slow_replies(chunk_bytes=400, delay_s=0.25)  # about two SSE chunks every quarter second
        page.get_by_label("Message", exact=True).fill("Count to a hundred")
        page.get_by_label("Message", exact=True).press("Enter")
        reply = page.locator("article.message.assistant")
        expect(reply.locator(".text")).not_to_have_text("")  # the first words arrived
        page.get_by_role("button", name="Stop").click()
        expect(reply.locator(".status")).to_have_text("Stopped.")
        partial = reply.locator(".text").inner_text()
        proxy.slow_replies(chunk_bytes=65536, delay_s=0)
        expect(page).to_have_url(re.compile(r"#/chat/conv_[0-9a-f]+$"))  # saved
        page.reload()
        # Saved as far as it got: the stored reply is what was on screen, not the whole generation.
        expect(page.locator("article.message.assistant .text")).to_have_text(partial)
    finally:
        proxy.close()


def test_stored_tool_calls_render_as_distinct_blocks_and_errors_are_shown(ui, gateway_url) -> None:  # type: ignore[no-untyped-def]
    import httpx

    page = ui
    messages = [
        {"role": "user", "content": "What is 6 times 7?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me compute it."},
                {"type": "python", "text": "print(6 * 7)"},
                {"type": "python_output", "text": "42"},
                {"type": "text", "text": "It is 42."},
            ],
        },
    ]
    created = httpx.post(
        f"{gateway_url}/v1/conversations", json={"title": "Tools", "messages": messages}
    ).json()
    page.goto(f"{gateway_url}/#/chat/{created['id']}")
    body = page.locator("article.message.assistant .message-body")
    # Text, the python run (its call and output in one collapsible block), text.
    expect(body.locator(":scope > *")).to_have_count(3)
    tool = body.locator("details.tool")
    expect(tool.locator(".tool-code")).to_contain_text("print(6 * 7)")
    expect(tool.locator("summary")).to_have_text(re.compile(r"^Python\s*ok$"))  # stored without a report
    expect(tool.locator(".tool-result")).to_have_text("42")
    expect(body.locator(".text").last).to_have_text("It is 42.")

    # The next turn sends the tool parts back as the chat format's parts; the gateway refuses a
    # max_tokens past the context, and the page shows its message and keeps the draft.
    _set_field(page, "Max tokens", 4000)
    page.get_by_label("Message", exact=True).fill("And 6 times 8?")
    page.get_by_label("Message", exact=True).press("Enter")
    expect(page.locator(".toast.error")).to_contain_text("max_tokens")
    expect(page.get_by_label("Message", exact=True)).to_have_value("And 6 times 8?")
    expect(page.locator("article.message")).to_have_count(2)
    httpx.delete(f"{gateway_url}/v1/conversations/{created['id']}").raise_for_status()
