"""The engine against the oracle: greedy output equals GPT.generate (full recompute) token for token."""

from __future__ import annotations

import random

import pytest
from inference_svc.config import EngineConfig
from inference_svc.engine import LLMEngine
from inference_svc.scheduler import RequestTooLong

from chatforge.contracts.sampling import SamplingParams

from .conftest import reference


def run_all(engine: LLMEngine, prompts, sampling) -> dict[str, list]:
    """Add every prompt, step until done, return the stream items per request in add order."""
    ids = [engine.add_request(p, s) for p, s in zip(prompts, sampling, strict=True)]
    items: dict[str, list] = {i: [] for i in ids}
    for _ in range(10_000):
        if not engine.has_work():
            break
        for rid, new in engine.step().items():
            items[rid].extend(new)
    return [items[i] for i in ids]


def tokens(items) -> list[int]:
    return [x.token_id for x in items if x.token_id is not None]


def assert_no_leak(engine: LLMEngine) -> None:
    assert engine.pool.num_free_blocks == engine.pool.num_blocks
    assert all(b.ref_cnt == 0 for b in engine.pool.blocks)
    assert not engine.kv.req_to_blocks and not engine.scheduler.requests and engine.num_unfinished == 0


def prompts_of(n, lo, hi, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(300) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def test_one_request_matches_the_reference(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=32))
    prompt = prompts_of(1, 20, 20)[0]
    (items,) = run_all(engine, [prompt], [SamplingParams(temperature=0.0, max_tokens=40)])
    assert tokens(items) == reference(tiny_model, prompt, 40)
    finish = items[-1].event
    assert finish.kind == "finish" and finish.finish_reason == "length"
    assert finish.usage.model_dump() == {"prompt_tokens": 20, "completion_tokens": 40, "cached_tokens": 0}
    assert finish.usage.total_tokens == 60
    assert_no_leak(engine)


def test_sixteen_concurrent_requests_of_different_lengths(tiny_model):
    # A small step budget forces chunked prefills to interleave with other sequences' decodes.
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=128, max_num_batched_tokens=48))
    prompts = prompts_of(16, 1, 90)
    max_tokens = [5 + 3 * i for i in range(16)]
    outs = run_all(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=m) for m in max_tokens])
    for prompt, m, items in zip(prompts, max_tokens, outs, strict=True):
        assert tokens(items) == reference(tiny_model, prompt, m)
    assert_no_leak(engine)


def test_shared_prefix_hits_the_cache_and_still_matches(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=64))
    system = prompts_of(1, 40, 40, seed=1)[0]
    prompts = [system + tail for tail in prompts_of(6, 3, 12, seed=2)]
    first = run_all(engine, prompts[:1], [SamplingParams(temperature=0.0, max_tokens=10)])
    rest = run_all(engine, prompts[1:], [SamplingParams(temperature=0.0, max_tokens=10)] * 5)
    assert engine.kv.prefix_hits > 0
    for prompt, items in zip(prompts, first + rest, strict=True):
        assert tokens(items) == reference(tiny_model, prompt, 10)
    assert rest[0][-1].event.usage.cached_tokens == 32  # two full 16-token blocks of the 40
    assert engine.metrics.prefix_hits._value.get() == engine.kv.prefix_hits
    assert_no_leak(engine)


def test_tiny_pool_preempts_and_loses_nothing(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=12, max_num_batched_tokens=64))
    prompts = prompts_of(8, 10, 40, seed=3)
    outs = run_all(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=40)] * 8)
    assert engine.scheduler.num_preemptions > 0
    assert engine.metrics.preemptions._value.get() == engine.scheduler.num_preemptions
    for prompt, items in zip(prompts, outs, strict=True):
        assert tokens(items) == reference(tiny_model, prompt, 40)
    assert_no_leak(engine)


def test_flex_attention_path_matches_the_reference(tiny_model):
    # FlexAttention runs eagerly on CPU (slowly), enough to check the paged block mask.
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=8, attention="flex", max_num_batched_tokens=16))
    prompts = [prompts_of(1, 20, 20, seed=4)[0], [7, 8, 9]]  # the first is prefilled in two chunks
    outs = run_all(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=4)] * 2)
    for prompt, items in zip(prompts, outs, strict=True):
        assert tokens(items) == reference(tiny_model, prompt, 4)
    assert engine.runner.backend.name == "flex"
    assert_no_leak(engine)


def test_seeded_sampling_is_reproducible_whatever_the_batch(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=64))
    prompt = prompts_of(1, 10, 10, seed=5)[0]
    params = SamplingParams(max_tokens=30, temperature=1.0, top_k=50, top_p=0.9, seed=1234)
    (alone,) = run_all(engine, [prompt], [params])
    crowd = run_all(
        engine,
        [prompt] + prompts_of(5, 5, 30, seed=6),
        [params] + [SamplingParams(temperature=0.0, max_tokens=20)] * 5,
    )
    other = run_all(engine, [prompt], [SamplingParams(max_tokens=30, temperature=1.0, seed=99)])
    assert tokens(alone) == tokens(crowd[0])
    assert tokens(alone) != tokens(other[0])
    assert tokens(alone) != reference(tiny_model, prompt, 30)  # it really sampled
    assert_no_leak(engine)


def test_stop_token_ids_end_the_request_early(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=32))
    prompt = prompts_of(1, 8, 8, seed=7)[0]
    ref = reference(tiny_model, prompt, 20)
    stop = ref[5]
    (items,) = run_all(
        engine, [prompt], [SamplingParams(temperature=0.0, max_tokens=20, stop_token_ids=(stop,))]
    )
    assert tokens(items) == ref[: ref.index(stop) + 1]
    assert items[-1].event.finish_reason == "stop"
    assert_no_leak(engine)


def test_abort_frees_the_blocks_at_the_next_step(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=32))
    rid = engine.add_request(prompts_of(1, 30, 30)[0], SamplingParams(temperature=0.0, max_tokens=100))
    engine.step()
    assert engine.pool.num_free_blocks < 32
    engine.abort(rid)
    engine.step()
    assert_no_leak(engine)
    assert engine.metrics.requests_finished.labels("abort")._value.get() == 1


def test_bad_requests_fail_at_once_with_a_message(tiny_model):
    engine = LLMEngine(tiny_model, EngineConfig(num_blocks=4))
    with pytest.raises(ValueError, match="empty"):
        engine.add_request([])
    with pytest.raises(ValueError, match=r"not an id in \[0, 300\)"):
        engine.add_request([1, 300])
    with pytest.raises(RequestTooLong, match="needs 5 KV blocks but the pool has 4"):
        engine.add_request([1] * 60, SamplingParams(temperature=0.0, max_tokens=10))
    assert not engine.has_work()
    engine.add_request([1, 2], SamplingParams(temperature=0.0, max_tokens=4), request_id="same")
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request([3, 4], SamplingParams(temperature=0.0, max_tokens=4), request_id="same")
