"""Generation for evaluations and RL through the engine's synchronous driver: tool calls run, the
tool output the engine forced into a sequence is marked unsampled, and batching changes nothing."""

from __future__ import annotations

from inference_svc.driver import EngineDriver

from chatforge.chat import render_for_completion, reply_stop_ids
from chatforge.contracts.sampling import SamplingParams
from tests.eval.conftest import LocalPython, bigram_model, tool_script


def greedy(tok, max_tokens: int = 40) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, stop_token_ids=reply_stop_ids(tok))


def test_tool_call_output_is_forced_and_reply_is_visible_text(script_tokenizer):
    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok))
    driver = EngineDriver.for_model(model, tok, tool_executor=LocalPython())
    prompt = render_for_completion(tok, [{"role": "user", "content": "What is six times seven?"}])
    try:
        (c,) = driver.generate([prompt], greedy(tok))
    finally:
        driver.close()
    assert c.finish_reason == "stop" and c.tool_calls == 1
    assert c.text.strip() == "#### 42"
    forced = [t for t, s in zip(c.token_ids, c.sampled, strict=True) if not s]
    sp = tok.special_id
    assert forced == [sp("<|output_start|>"), *tok.encode("42\n"), sp("<|output_end|>")]
    assert c.token_ids[0] == sp("<|python_start|>") and c.token_ids[-1] == sp("<|assistant_end|>")
    # the forced run sits right after <|python_end|>, and everything after it was sampled again
    end = c.token_ids.index(sp("<|python_end|>"))
    assert c.token_ids[end + 1 : end + 1 + len(forced)] == forced
    assert all(c.sampled[: end + 1]) and all(c.sampled[end + 1 + len(forced) :])


def test_forced_tokens_follow_the_tool_result_event_and_count_in_usage(script_tokenizer):
    """The engine's stream: a tool_result event, then exactly the encoding of its output as forced
    items; the finish event's completion tokens count them. Without room for the output the
    request ends at the result, with no forced item at all."""
    from chatforge.contracts.generate import FinishEvent, ToolResultEvent

    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok))
    driver = EngineDriver.for_model(model, tok, tool_executor=LocalPython())
    prompt = render_for_completion(tok, [{"role": "user", "content": "What is six times seven?"}])
    sp = tok.special_id
    try:
        items = list(driver.stream(prompt, greedy(tok)))
        (i,) = [n for n, item in enumerate(items) if isinstance(item.event, ToolResultEvent)]
        output = items[i].event.output
        forced = [item.token_id for item in items if item.forced]
        assert forced == [item.token_id for item in items[i + 1 : i + 1 + len(forced)]]
        assert forced == [sp("<|output_start|>"), *tok.encode(output), sp("<|output_end|>")]
        finish = items[-1].event
        assert isinstance(finish, FinishEvent)
        assert finish.usage.completion_tokens == sum(item.token_id is not None for item in items)

        code_len = len(tok.encode("print(6*7)")) + 2  # <|python_start|> code <|python_end|>
        (c,) = driver.generate([prompt], greedy(tok, max_tokens=code_len + 2))
        assert c.finish_reason == "length" and c.tool_calls == 1
        assert all(c.sampled) and len(c.token_ids) == code_len
    finally:
        driver.close()


def test_many_prompts_in_one_batch_match_one_at_a_time(script_tokenizer):
    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok))
    prompts = [
        render_for_completion(tok, [{"role": "user", "content": f"question number {i}"}]) for i in range(4)
    ]
    batched = EngineDriver.for_model(model, tok, tool_executor=LocalPython()).generate(prompts, greedy(tok))
    single = EngineDriver.for_model(model, tok, tool_executor=LocalPython(), max_in_flight=1).generate(
        prompts, greedy(tok)
    )
    assert [c.token_ids for c in batched] == [c.token_ids for c in single]
    assert all(c.text.strip() == "#### 42" for c in batched)


def test_a_seed_gives_each_completion_its_own_draw_and_repeats(script_tokenizer):
    """Completion i of a call draws with seed + i: a call repeats, and its samples differ."""
    tok = script_tokenizer
    model = bigram_model(tok, tool_script(tok, answers=("42", "41")))  # the answer is a coin flip
    prompt = render_for_completion(tok, [{"role": "user", "content": "What is six times seven?"}])
    driver = EngineDriver.for_model(model, tok, tool_executor=LocalPython())
    # temperature 0.5: the coin flip stays even, and the bigram's leak to every other token vanishes
    sampling = SamplingParams(
        max_tokens=40, temperature=0.5, top_k=0, seed=7, stop_token_ids=reply_stop_ids(tok)
    )
    try:
        first = [c.text for c in driver.generate([prompt] * 8, sampling)]
        again = [c.text for c in driver.generate([prompt] * 8, sampling)]
        alone = driver.generate([prompt], sampling.with_(seed=7 + 5))[0].text
    finally:
        driver.close()
    assert first == again and alone == first[5]
    assert {t.strip() for t in first} == {"#### 42", "#### 41"}
