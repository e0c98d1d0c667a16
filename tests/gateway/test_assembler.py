"""The pure text core: stop strings across deltas, tool blocks kept out of the message text."""

from __future__ import annotations

import asyncio

from gateway.assembler import ChoiceAssembler, StopScanner
from gateway.codec import LocalCodec
from gateway.inference import Piece
from hypothesis import given
from hypothesis import strategies as st


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


def test_tool_blocks_become_tool_deltas_not_text(tiny_tokenizer):
    codec = LocalCodec(tiny_tokenizer)
    sp = tiny_tokenizer.special_ids
    assembler = ChoiceAssembler(sp, codec.decoder(), StopScanner([]))
    text_ids = tiny_tokenizer.encode("The answer")
    code_ids = tiny_tokenizer.encode("print(1+1)")
    out_ids = tiny_tokenizer.encode("2")

    async def run():
        deltas = []
        for piece in (
            Piece(tuple(text_ids)),
            Piece(
                (sp["<|python_start|>"], *code_ids, sp["<|python_end|>"]), "tool_call", {"code": "print(1+1)"}
            ),
            Piece(
                (sp["<|output_start|>"], *out_ids, sp["<|output_end|>"]),
                "tool_result",
                {"output": "2", "outcome": "ok"},
            ),
            Piece(tuple(tiny_tokenizer.encode(" is 2"))),
            Piece(
                (sp["<|assistant_end|>"],),
                "finish",
                {"finish_reason": "stop", "usage": {"prompt_tokens": 7, "completion_tokens": 30}},
            ),
        ):
            deltas += await assembler.feed(piece)
        return deltas

    deltas = asyncio.run(run())
    assert "".join(d.text for d in deltas) == "The answer is 2"
    tools = [d.tool for d in deltas if d.tool]
    assert tools == [
        {"type": "python_call", "code": "print(1+1)"},
        {"type": "python_output", "output": "2", "outcome": "ok"},
    ]
    assert assembler.outcome.finish_reason == "stop"
    assert (assembler.outcome.prompt_tokens, assembler.outcome.completion_tokens) == (7, 30)


def test_multibyte_characters_are_never_split(tiny_tokenizer):
    ids = tiny_tokenizer.encode("😀 café")
    assembler = ChoiceAssembler(
        tiny_tokenizer.special_ids, LocalCodec(tiny_tokenizer).decoder(), StopScanner([])
    )

    async def run():
        texts = [d.text for i in ids for d in await assembler.feed(Piece((i,)))]
        texts += [d.text for d in await assembler.feed(Piece((), "finish", {"finish_reason": "length"}))]
        return texts

    texts = asyncio.run(run())
    assert "".join(texts) == "😀 café" and all("\ufffd" not in t for t in texts)
    assert assembler.outcome.finish_reason == "length"


def test_engine_text_mode_takes_the_pieces_text_outside_tool_blocks(tiny_tokenizer):
    sp = tiny_tokenizer.special_ids
    assembler = ChoiceAssembler(sp, None, StopScanner(["STOP"]))

    async def run():
        pieces = [
            Piece((5,), text="Hi "),
            Piece((sp["<|python_start|>"],)),
            Piece((6,), text="code-text-the-engine-showed"),
            Piece((sp["<|python_end|>"],), "tool_call", {"code": "1"}),
            Piece((7,), text="there"),
            Piece((), text="!"),  # the engine's final flush
            Piece((8,), text=" STOP and more"),
            Piece((sp["<|assistant_end|>"],), "finish", {"finish_reason": "stop"}),
        ]
        return [d for p in pieces for d in await assembler.feed(p)]

    deltas = asyncio.run(run())
    assert "".join(d.text for d in deltas) == "Hi there! "
    assert [d.tool for d in deltas if d.tool] == [{"type": "python_call", "code": "1"}]
    assert assembler.outcome.finish_reason == "stop"
