"""The UI's pure modules (SSE parsing, Markdown, reply and job-progress folding) run in the real
browser they ship to, on inputs whose right answers are written out by hand."""

from __future__ import annotations

import pytest


@pytest.fixture
def modules(page, static_url):  # type: ignore[no-untyped-def]
    page.goto(f"{static_url}/")
    return page


def test_sse_parser_handles_split_lines_comments_and_multiline_data(modules) -> None:
    events = modules.evaluate(
        """async () => {
        const { SSEParser } = await import("/js/sse.js");
        const p = new SSEParser();
        const out = [];
        // "\\r\\n" split across chunks, a comment, a two-line data field, a named event with an id,
        // and a last event with no blank line after it (the spec drops it).
        for (const chunk of ["data: one\\r", "\\n\\r\\n: keep-alive\\n\\nda", "ta: a\\ndata: b\\n\\n",
                             "event: end\\nid: 7-0\\ndata: {}\\n\\n", "data: unfinished\\n"]) {
          out.push(...p.feed(chunk));
        }
        return out;
    }"""
    )
    assert events == [
        {"event": "message", "data": "one", "id": None},
        {"event": "message", "data": "a\nb", "id": None},
        {"event": "end", "data": "{}", "id": "7-0"},
    ]


def test_markdown_renders_the_report_subset_and_sanitizes_markup(modules) -> None:
    result = modules.evaluate(
        """async () => {
        const { renderMarkdown } = await import("/js/markdown.js");
        const src = [
          "# Report <b>card</b>",
          "",
          "Loss went **down** to `2.31`, see [the run](runs/demo) and [bad](javascript:alert(1)).",
          "",
          "| stage | bpb |",
          "| --- | ---: |",
          "| base | 1.23 |",
          "| sft | 1.01 |",
          "",
          "- one",
          "- two <img src=x onerror=alert(1)>",
          "",
          "![loss](loss.png)",
          "",
          "```",
          "<script>alert(1)</script>",
          "```",
        ].join("\\n");
        const div = document.createElement("div");
        div.append(renderMarkdown(src, (href) => href.startsWith("javascript:") ? null : "/r/" + href));
        return {
          h1: div.querySelector("h1").textContent,
          strong: div.querySelector("p strong").textContent,
          code: div.querySelector("p code").textContent,
          links: [...div.querySelectorAll("a:not(.image-link)")].map((a) => a.getAttribute("href")),
          imageLinks: [...div.querySelectorAll("a.image-link")].map((a) => [a.textContent, a.getAttribute("href")]),
          cells: [...div.querySelectorAll("td")].map((td) => td.textContent),
          align: div.querySelector("td:nth-child(2)").getAttribute("align"),
          items: [...div.querySelectorAll("li")].map((li) => li.textContent),
          bold: div.querySelectorAll("h1 b").length,
          imgs: div.querySelectorAll("img").length,
          pre: div.querySelector("pre code").textContent,
          scripts: div.querySelectorAll("script, [onerror]").length,
        };
    }"""
    )
    assert result["h1"] == "Report card" and result["bold"] == 1  # inline HTML, as GitHub allows it
    assert result["strong"] == "down" and result["code"] == "2.31"
    assert result["links"] == ["/r/runs/demo", None]  # the javascript: link loses its target, keeps its text
    assert result["cells"] == ["base", "1.23", "sft", "1.01"]
    assert result["align"] == "right"
    assert result["items"] == ["one", "two 🖼 image"]  # the handler is gone, the image not fetched
    # Not deferred to the caller, an image becomes a link to it: nothing is fetched on its own.
    assert result["imgs"] == 0
    assert result["imageLinks"] == [["🖼 image", "/r/x"], ["🖼 loss", "/r/loss.png"]]
    assert result["pre"] == "<script>alert(1)</script>"
    assert result["scripts"] == 0


def test_reply_builder_folds_text_and_tool_deltas_into_chat_parts(modules) -> None:
    result = modules.evaluate(
        """async () => {
        const { ReplyBuilder, contentToBlocks } = await import("/js/chat_stream.js");
        const r = new ReplyBuilder();
        const chunk = (delta, finish_reason = null) => ({ choices: [{ index: 0, delta, finish_reason }] });
        r.add(chunk({ role: "assistant", content: "" }));
        r.add(chunk({ content: "Let me " }));
        r.add(chunk({ content: "compute." }));
        r.add(chunk({ chatforge_tool: { type: "python_call", code: "print(6*7)" } }));
        r.add(chunk({ chatforge_tool: { type: "python_output", outcome: "ok", output: "42\\n", duration_s: 0.05 } }));
        r.add(chunk({ content: "It is 42." }));
        r.add(chunk({}, "stop"));
        r.add({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 9, total_tokens: 14 } });
        const failed = new ReplyBuilder();
        failed.add({ error: { message: "generation failed: boom", type: "upstream_error" } });
        return {
          kinds: r.blocks.map((b) => b.kind), content: r.content, finish: r.finishReason,
          usage: r.usage.total_tokens, error: failed.error,
          roundTrip: contentToBlocks(r.content).map((b) => b.kind),
          plain: contentToBlocks("hi"),
        };
    }"""
    )
    assert result["kinds"] == ["text", "python_call", "python_output", "text"]
    assert result["content"] == [
        {"type": "text", "text": "Let me compute."},
        {"type": "python", "text": "print(6*7)"},
        {"type": "python_output", "text": "42\n"},
        {"type": "text", "text": "It is 42."},
    ]
    assert result["finish"] == "stop" and result["usage"] == 14
    assert result["error"] == "generation failed: boom"
    assert result["roundTrip"] == result["kinds"]
    assert result["plain"] == [{"kind": "text", "text": "hi"}]


def test_job_progress_tracks_steps_per_stage(modules) -> None:
    result = modules.evaluate(
        """async () => {
        const { JobProgress } = await import("/js/job_progress.js");
        const p = new JobProgress();
        const seen = [];
        p.add("state", { type: "state", state: "running" });
        seen.push(p.fraction);
        p.add("start", { stage: "base", step: 0, num_steps: 20 });
        p.add("progress", { stage: "base", step: 5, loss: 3.5, tokens_per_s: 1200, eta_s: 30 });
        seen.push(p.fraction);
        p.add("start", { stage: "mid", step: 0, num_steps: 10 });
        p.add("progress", { stage: "mid", step: 10, loss: 2.5 });
        seen.push(p.fraction);
        // a newer trainer's event: its fields may mean something else, so it is not folded in
        p.add("progress", { version: 2, stage: "sft", step: 99, loss: 0.1 });
        return { seen, stage: p.stage, state: p.state, loss: p.latest.loss, tps: p.latest.tokens_per_s };
    }"""
    )
    assert result["seen"] == [None, 0.25, 1]
    assert result["stage"] == "mid" and result["state"] == "running"
    assert result["loss"] == 2.5 and result["tps"] is None  # base's throughput is not mid's


def test_job_progress_reads_the_fields_the_event_contract_defines(modules) -> None:
    """The events the page folds are the contract's own (chatforge.contracts.events), as written."""
    from chatforge.contracts.events import EVENTS_VERSION, JobStateEvent, ProgressEvent, StartEvent

    events = [
        JobStateEvent(state="running"),
        StartEvent(stage="base", step=0, num_steps=20, workers=1, resumed=False),
        ProgressEvent(stage="base", step=5, loss=3.5, lr=0.02, tokens_per_s=1200.0, mfu=0.1, eta_s=30.0),
    ]
    result = modules.evaluate(
        """async (events) => {
        const { JobProgress, EVENTS_VERSION } = await import("/js/job_progress.js");
        const p = new JobProgress();
        for (const e of events) p.add(e.type, e);
        return { version: EVENTS_VERSION, fraction: p.fraction, latest: p.latest, state: p.state };
    }""",
        [e.model_dump(mode="json") for e in events],
    )
    assert result["version"] == EVENTS_VERSION
    assert result["fraction"] == 0.25 and result["state"] == "running"
    assert result["latest"] == {"loss": 3.5, "lr": 0.02, "tokens_per_s": 1200, "mfu": 0.1, "eta_s": 30}


def test_a_real_report_card_renders_with_its_tables_and_plots(modules) -> None:
    """The Markdown trainer/report.py writes, rendered by the page: every section, table and plot."""
    from trainer.report import StageSummary, render_markdown

    stages = [
        StageSummary("base", checkpoint="demo/base/step_000020", step=20, num_steps=20, tokens=40_960,
                     duration_s=61.0, final_loss=5.1234, val_bpb=1.9, tokens_per_s=670.0, mfu=0.012),
        StageSummary("sft", checkpoint="demo/sft/step_000010", step=10, num_steps=10, tokens=8_192,
                     duration_s=12.0, final_loss=2.5, evals=[{"checkpoint": "demo/sft/step_000010",
                     "chat": {"chatcore": 0.0421, "tasks": {"arc_easy": {"accuracy": 0.3, "centered": 0.07, "n": 40}}}}]),
    ]  # fmt: skip
    text = render_markdown(
        "demo", stages, {"loss": "loss.png", "bpb": "bpb.png"}, {"name": "default", "vocab_size": 512},
        {"python": "3.11", "device": "cpu"}, 24.0,
    )  # fmt: skip
    result = modules.evaluate(
        """async (text) => {
        const { renderMarkdown } = await import("/js/markdown.js");
        const div = document.createElement("div");
        div.append(renderMarkdown(text, (href) => "/v1/reports/demo/" + href, { deferImages: true }));
        const tables = [...div.querySelectorAll("table")];
        return {
          h1: div.querySelector("h1").textContent,
          h2: [...div.querySelectorAll("h2")].map((e) => e.textContent),
          summaryRows: tables.at(-1).querySelectorAll("tbody tr").length,
          summaryHead: [...tables.at(-1).querySelectorAll("th")].map((e) => e.textContent),
          chatRow: [...tables[0].querySelectorAll("tbody td")].map((e) => e.textContent),
          strong: [...div.querySelectorAll("strong")].map((e) => e.textContent),
          imgs: [...div.querySelectorAll("img")].map((e) => [e.alt, e.getAttribute("src"), e.dataset.src]),
          raw: div.textContent.includes("**") || div.textContent.includes("|"),
        };
    }""",
        text,
    )
    assert result["h1"] == "chatforge report card: run demo"
    assert result["h2"] == ["Environment", "Tokenizer", "Stage base", "Stage sft", "Summary", "Plots"]
    assert result["summaryRows"] == 2
    assert result["summaryHead"][:3] == ["stage", "steps", "tokens"]
    assert result["chatRow"] == ["arc_easy", "0.3000", "0.0700", "40"]
    assert "0.0421" in result["strong"]
    # Deferred, as the reports page asks: the page fetches each plot itself, with the API key.
    assert result["imgs"] == [
        ["loss", None, "/v1/reports/demo/loss.png"],
        ["bpb", None, "/v1/reports/demo/bpb.png"],
    ]
    assert not result["raw"], "no Markdown syntax is left over in the rendered text"
