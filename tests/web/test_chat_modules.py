"""The chat's pure modules in the browser they ship to: where a streaming text is cut into blocks,
the conversation tree and its stored form, and the Markdown a message exports as. Right answers
are written out by hand."""

from __future__ import annotations

import pytest


@pytest.fixture
def modules(page, static_url):  # type: ignore[no-untyped-def]
    page.goto(f"{static_url}/")
    return page


def test_blocks_are_cut_only_before_a_new_top_level_block(modules) -> None:
    cases = {
        "a\n\nb": ["a\n\n", "b"],
        "# Title\ntext\n\n\nnext": ["# Title\ntext\n\n\n", "next"],
        # A blank line inside fenced code is code, whichever fence it is.
        "```py\nx = 1\n\ny = 2\n```\n\nafter": ["```py\nx = 1\n\ny = 2\n```\n\n", "after"],
        "~~~~\n```\n\nstill code\n~~~~\n\nout": ["~~~~\n```\n\nstill code\n~~~~\n\n", "out"],
        "```py\nunclosed\n\nstill code": ["```py\nunclosed\n\nstill code"],
        # Inline code with three backticks is not a fence.
        "```js x```\n\nz": ["```js x```\n\n", "z"],
        # Indented lines continue what is above them (a list item's paragraph, indented code).
        "- a\n\n  more of a\n\n- b": ["- a\n\n  more of a\n\n", "- b"],
        "text\n\n    code\n\n    more code": ["text\n\n    code\n\n    more code"],
        "": [""],
    }
    results = modules.evaluate(
        """async (cases) => {
        const { splitBlocks } = await import("/js/chat/blocks.js");
        return Object.fromEntries(Object.keys(cases).map((text) => [text, splitBlocks(text)]));
    }""",
        cases,
    )
    assert results == cases


def test_a_cut_once_made_stays_as_the_text_grows(modules) -> None:
    """Streamed a character at a time, every finished piece is final: what the page keeps."""
    text = "Intro\n\n```py\ndef f():\n\n    return 1\n```\n\n- a\n\n  a2\n- b\n\n> quote\n\n| t |\n| - |\n| 1 |\n\nend"
    broken = modules.evaluate(
        """async (text) => {
        const { splitBlocks } = await import("/js/chat/blocks.js");
        const full = splitBlocks(text);
        const broken = [];
        for (let n = 0; n <= text.length; n++) {
          const pieces = splitBlocks(text.slice(0, n));
          if (pieces.join("") !== text.slice(0, n)) broken.push([n, "pieces do not join to the text"]);
          pieces.slice(0, -1).forEach((piece, i) => piece !== full[i] && broken.push([n, piece]));
        }
        return { broken, full };
    }""",
        text,
    )
    assert broken["broken"] == []
    assert broken["full"] == [
        "Intro\n\n",
        "```py\ndef f():\n\n    return 1\n```\n\n",
        "- a\n\n  a2\n- b\n\n",
        "> quote\n\n",
        "| t |\n| - |\n| 1 |\n\n",
        "end",
    ]


def test_the_conversation_tree_forks_switches_and_round_trips_through_storage(modules) -> None:
    result = modules.evaluate(
        """async () => {
        const { ConversationTree } = await import("/js/chat/tree.js");
        const t = new ConversationTree();
        const q1 = t.append("user", "q1");
        const a1 = t.append("assistant", "a1");
        const q2 = t.append("user", "q2");
        const a2 = t.append("assistant", [{ type: "python", text: "1" }, { type: "python_output", text: "1" }]);
        a2.toolRuns = [{ outcome: "ok", duration_s: 0.1, message: "" }];
        const texts = () => t.path().map((n) => (typeof n.content === "string" ? n.content : "parts"));
        const seen = {};
        // Regenerate a1: the rest of the conversation goes with the old a1.
        const a1b = t.fork(a1, "a1b");
        seen.regenerated = texts();
        seen.alternatives = t.alternativesOf(a1b);
        // Inside that hidden branch, fork q2 as well: a fork within a fork.
        t.switchFrom(a1b, -1);
        seen.back = texts();
        const q2b = t.fork(q2, "q2b");
        t.addChild(q2b, "assistant", "a2b");
        t.switchFrom(q2b, -1);
        t.switchFrom(a1, 1);
        seen.shown = texts();
        const stored = t.toMessages();
        const again = ConversationTree.fromMessages(JSON.parse(JSON.stringify(stored)));
        seen.same = JSON.stringify(again.toMessages()) === JSON.stringify(stored);
        again.switchFrom(again.path()[1], -1);
        seen.restored = again.path().map((n) => n.content);
        seen.toolRuns = again.path()[3].toolRuns;
        seen.history = again.historyTo(again.path()[2]);
        // Plain chats (another client's, or from before alternatives) load as one branch.
        seen.plain = ConversationTree.fromMessages([{ role: "user", content: "hi" }, { role: "assistant", content: "yo" }])
          .path().map((n) => n.content);
        return { seen, stored };
    }"""
    )
    seen, stored = result["seen"], result["stored"]
    assert seen["regenerated"] == ["q1", "a1b"]
    assert seen["alternatives"] == {"index": 1, "count": 2}
    assert seen["back"] == ["q1", "a1", "q2", "parts"]
    assert seen["shown"] == ["q1", "a1b"]
    assert stored == [
        {"role": "user", "content": "q1"},
        {
            "role": "assistant",
            "content": "a1b",
            "alternatives": {
                "index": 1,
                "others": [
                    [
                        {"role": "assistant", "content": "a1"},
                        {
                            "role": "user",
                            "content": "q2",
                            "alternatives": {"index": 0, "others": [[{"role": "user", "content": "q2b"}, {"role": "assistant", "content": "a2b"}]]},
                        },
                        {
                            "role": "assistant",
                            "content": [{"type": "python", "text": "1"}, {"type": "python_output", "text": "1"}],
                            "tool_runs": [{"outcome": "ok", "duration_s": 0.1, "message": ""}],
                        },
                    ]
                ],
            },
        },
    ]  # fmt: skip
    assert seen["same"] is True
    assert seen["restored"][:3] == ["q1", "a1", "q2"] and seen["toolRuns"][0]["outcome"] == "ok"
    # What the model is sent: role and content only, never the page's own keys.
    assert seen["history"] == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    assert seen["plain"] == ["hi", "yo"]


def test_stored_nesting_grows_with_forks_not_with_length(modules) -> None:
    """The gateway bounds a document's nesting (max_conversation_depth, 32): a long hidden branch
    must not nest deeper than a short one."""
    depths = modules.evaluate(
        """async () => {
        const { ConversationTree } = await import("/js/chat/tree.js");
        const depth = (v) => (v && typeof v === "object" ? 1 + Math.max(0, ...Object.values(v).map(depth)) : 0);
        const stored = (turns) => {
          const t = new ConversationTree();
          const first = t.append("user", "q0");
          const reply = t.append("assistant", "a0");
          for (let i = 1; i < turns; i++) { t.append("user", `q${i}`); t.append("assistant", `a${i}`); }
          t.fork(reply, "regenerated");  // everything after a0 is now a hidden branch
          return { messages: t.toMessages() };
        };
        return [depth(stored(2)), depth(stored(100))];
    }"""
    )
    assert depths[0] == depths[1] <= 10


def test_a_message_exports_as_markdown_with_its_python_runs(modules) -> None:
    text = modules.evaluate(
        """async () => {
        const { messageMarkdown, fileStem } = await import("/js/chat/export.js");
        const content = [
          { type: "text", text: "Look:" },
          { type: "python", text: "print('```')" },
          { type: "python_output", text: "```\\n" },
          { type: "python", text: "while True: pass" },
          { type: "python_output", text: "" },
        ];
        const toolRuns = [{ outcome: "ok", duration_s: 0.02, message: "" }, { outcome: "timeout", duration_s: 5, message: "killed" }];
        return [messageMarkdown({ content, toolRuns }), fileStem("  Hello, World!  "), fileStem("!!!")];
    }"""
    )
    assert text == [
        "Look:\n\n````python\nprint('```')\n````\n\nOutput (ok, 0.02 s):\n\n````\n```\n````\n\n"
        "```python\nwhile True: pass\n```\n\nOutput (timeout, 5.00 s):\n\n```\nkilled\n```",
        "hello-world",
        "conversation",
    ]
