"""Generation through the paged engine: tool calls run, forced tool output is marked unsampled."""

from __future__ import annotations

from chatforge.chat import render_for_completion
from tests.eval.conftest import LocalPython, bigram_model, tool_script
from trainer.eval.rollout import EngineGenerator, GenerationParams


def test_tool_call_output_is_forced_and_reply_is_visible_text(script_tokenizer):
    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok))
    generator = EngineGenerator(model, tok, tool_executor=LocalPython())
    prompt = render_for_completion(tok, [{"role": "user", "content": "What is six times seven?"}])
    try:
        (c,) = generator.generate([prompt], GenerationParams(max_tokens=40))
    finally:
        generator.close()
    assert c.finish_reason == "stop" and c.tool_calls == 1
    assert c.text.strip() == "#### 42"
    forced = [t for t, s in zip(c.token_ids, c.sampled, strict=True) if not s]
    sp = tok.special_id
    assert forced == [sp("<|output_start|>"), *tok.encode("42\n"), sp("<|output_end|>")]
    assert c.token_ids[0] == sp("<|python_start|>") and c.token_ids[-1] == sp("<|assistant_end|>")
    assert all(c.sampled[c.token_ids.index(sp("<|python_end|>")) + 1 + len(forced) :])


def test_many_prompts_in_one_batch_match_one_at_a_time(script_tokenizer):
    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok))
    prompts = [
        render_for_completion(tok, [{"role": "user", "content": f"question number {i}"}]) for i in range(4)
    ]
    params = GenerationParams(max_tokens=40)
    batched = EngineGenerator(model, tok, tool_executor=LocalPython()).generate(prompts, params)
    single = EngineGenerator(model, tok, tool_executor=LocalPython(), max_concurrent=1).generate(
        prompts, params
    )
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert all(c.text.strip() == "#### 42" for c in batched)
