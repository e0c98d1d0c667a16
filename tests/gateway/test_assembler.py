"""The pure text core: stop strings across deltas, tool blocks kept out of the message text."""

from __future__ import annotations

import asyncio

from gateway.assembler import ChoiceAssembler, StopScanner
from gateway.codec import LocalCodec
from hypothesis import given
from hypothesis import strategies as st

from chatforge.contracts.generate import (
    FinishEvent,
    StreamItem,
    ToolCallEvent,
    ToolResultEvent,
    Usage,
)


@given(
    st.lists(st.text(alphabet="abc", max_size=4), max_size=12),
    st.text(alphabet="abc", min_size=1, max_size=3),
)
def test_stop_scanner_equals_cutting_the_whole_text(chunks, stop):
    scanner = StopScanner([stop])
    out = "".join(scanner.feed(c) for c in chunks) + scanner.flush()
    whole = "".join(chunks)
    expected = whole[: whole.find(stop)] if stop in whole else whole
    assert out == expected
    assert scanner.stopped == (stop in whole)


def test_earliest_of_several_stops_wins():
    scanner = StopScanner(["world", "lo w"])
    assert scanner.feed("hel") + scanner.feed("lo world") == "hel"


def tokens(ids, text: str = "") -> list[StreamItem]:
    """What the engine streams for `ids`: one item each, `text` riding on the last."""
    ids = list(ids)
    return [StreamItem(token_id=t, text=text if i == len(ids) - 1 else "") for i, t in enumerate(ids)]


def finish(reason: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> StreamItem:
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    return StreamItem(event=FinishEvent(finish_reason=reason, usage=usage))


def test_tool_blocks_become_tool_deltas_not_text(tiny_tokenizer):
    codec = LocalCodec(tiny_tokenizer)
    sp = tiny_tokenizer.special_ids
    assembler = ChoiceAssembler(sp, codec.decoder(), StopScanner([]))
    text_ids = tiny_tokenizer.encode("The answer")
    code_ids = tiny_tokenizer.encode("print(1+1)")
    out_ids = tiny_tokenizer.encode("2")

    async def run():
        deltas = []
        script = [
            *tokens(text_ids),
            *tokens((sp["<|python_start|>"], *code_ids, sp["<|python_end|>"])),
            StreamItem(event=ToolCallEvent(code="print(1+1)")),
            StreamItem(event=ToolResultEvent(outcome="ok", output="2", duration_s=0.5)),
            *tokens((sp["<|output_start|>"], *out_ids, sp["<|output_end|>"])),
            *tokens(tiny_tokenizer.encode(" is 2")),
            *tokens((sp["<|assistant_end|>"],)),
            finish("stop", 7, 30),
        ]
        for item in script:
            deltas += await assembler.feed(item)
        return deltas

    deltas = asyncio.run(run())
    assert "".join(d.text for d in deltas) == "The answer is 2"
    tools = [d.tool for d in deltas if d.tool]
    assert tools == [
        {"type": "python_call", "code": "print(1+1)"},
        {"type": "python_output", "outcome": "ok", "output": "2", "duration_s": 0.5, "message": ""},
    ]
    assert assembler.outcome.finish_reason == "stop"
    assert (assembler.outcome.prompt_tokens, assembler.outcome.completion_tokens) == (7, 30)


def test_multibyte_characters_are_never_split(tiny_tokenizer):
    ids = tiny_tokenizer.encode("😀 café")
    assembler = ChoiceAssembler(
        tiny_tokenizer.special_ids, LocalCodec(tiny_tokenizer).decoder(), StopScanner([])
    )

    async def run():
        texts = [d.text for item in tokens(ids) for d in await assembler.feed(item)]
        texts += [d.text for d in await assembler.feed(finish("length"))]
        return texts

    texts = asyncio.run(run())
    assert "".join(texts) == "😀 café" and all("\ufffd" not in t for t in texts)
    assert assembler.outcome.finish_reason == "length"


def test_engine_text_mode_takes_the_items_text_outside_tool_blocks(tiny_tokenizer):
    sp = tiny_tokenizer.special_ids
    assembler = ChoiceAssembler(sp, None, StopScanner(["STOP"]))

    async def run():
        pieces = [
            *tokens((5,), "Hi "),
            *tokens((sp["<|python_start|>"],)),
            *tokens((6,), "code-text-the-engine-showed"),
            *tokens((sp["<|python_end|>"],)),
            StreamItem(event=ToolCallEvent(code="1")),
            *tokens((7,), "there"),
            StreamItem(text="!"),  # the engine's final flush
            *tokens((8,), " STOP and more"),
            *tokens((sp["<|assistant_end|>"],)),
            finish("stop"),
        ]
        return [d for p in pieces for d in await assembler.feed(p)]

    deltas = asyncio.run(run())
    assert "".join(d.text for d in deltas) == "Hi there! "
    assert [d.tool for d in deltas if d.tool] == [{"type": "python_call", "code": "1"}]
    assert assembler.outcome.finish_reason == "stop"
