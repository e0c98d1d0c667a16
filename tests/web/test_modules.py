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


def test_markdown_renders_the_report_subset_and_never_markup(modules) -> None:
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
          links: [...div.querySelectorAll("a")].map((a) => a.getAttribute("href")),
          cells: [...div.querySelectorAll("td")].map((td) => td.textContent),
          align: div.querySelector("td:nth-child(2)").style.textAlign,
          items: [...div.querySelectorAll("li")].map((li) => li.textContent),
          img: div.querySelector("img").getAttribute("src"),
          pre: div.querySelector("pre code").textContent,
          scripts: div.querySelectorAll("script, b, img[onerror]").length,
        };
    }"""
    )
    assert result["h1"] == "Report <b>card</b>"
    assert result["strong"] == "down" and result["code"] == "2.31"
    assert result["links"] == ["/r/runs/demo"]  # the javascript: link is dropped, its text kept
    assert result["cells"] == ["base", "1.23", "sft", "1.01"]
    assert result["align"] == "right"
    assert result["items"] == ["one", "two <img src=x onerror=alert(1)>"]
    assert result["img"] == "/r/loss.png"
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
        return { seen, stage: p.stage, state: p.state, loss: p.latest.loss, tps: p.latest.tokens_per_s };
    }"""
    )
    assert result["seen"] == [None, 0.25, 1]
    assert result["stage"] == "mid" and result["state"] == "running"
    assert result["loss"] == 2.5 and result["tps"] == 1200
