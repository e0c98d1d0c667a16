"""The scheduler on exact block ids: token budget, chunked prefill, decode first, preemption, refusal."""

from __future__ import annotations

import pytest
from inference_svc.block_pool import BlockPool
from inference_svc.kv_cache_manager import KVCacheManager
from inference_svc.request import Request, RequestStatus
from inference_svc.scheduler import RequestTooLong, Scheduler

from chatforge.contracts.sampling import SamplingParams


def make(num_blocks=8, block_size=4, budget=16, max_seqs=8, max_model_len=64):
    kv = KVCacheManager(BlockPool(num_blocks), block_size)
    return Scheduler(kv, max_num_batched_tokens=budget, max_num_seqs=max_seqs, max_model_len=max_model_len)


def req(rid, n, max_tokens=8, first=0):
    return Request(rid, list(range(first, first + n)), SamplingParams(temperature=0.0, max_tokens=max_tokens))


def run_step(s, tokens=None):
    out = s.schedule()
    sampled = {c.request_id: (tokens or {}).get(c.request_id, 1) for c in out.chunks if c.sample}
    return out, s.update_from_output(out, sampled)


def test_long_prompt_is_prefilled_in_chunks_within_the_budget():
    s = make(budget=8)
    s.add_request(req("a", 20))
    out, updates = run_step(s)
    (chunk,) = out.chunks
    assert (chunk.start_pos, len(chunk.token_ids), chunk.sample, chunk.block_ids) == (0, 8, False, [0, 1])
    assert updates == []
    out, _ = run_step(s)
    assert (out.chunks[0].start_pos, len(out.chunks[0].token_ids)) == (8, 8)
    out, updates = run_step(s)
    assert (out.chunks[0].start_pos, len(out.chunks[0].token_ids), out.chunks[0].sample) == (16, 4, True)
    assert updates[0].new_token_id == 1 and s.requests["a"].num_output_tokens == 1


def test_running_decodes_go_first_then_waiting_prefills_share_the_budget():
    s = make(budget=6)
    s.add_request(req("a", 3))
    run_step(s)  # a prefilled and sampled its first token
    s.add_request(req("b", 10, first=100))
    out, _ = run_step(s)
    assert [(c.request_id, len(c.token_ids)) for c in out.chunks] == [("a", 1), ("b", 5)]
    assert out.chunks[1].block_ids == [1, 2]


def test_finished_requests_leave_at_once_and_return_their_blocks():
    s = make()
    s.add_request(req("a", 3, max_tokens=2))
    _, u1 = run_step(s)
    _, u2 = run_step(s)
    assert u1[0].finish_reason is None and u2[0].finish_reason == "length"
    assert s.num_running == 0 and s.kv.pool.num_free_blocks == 8 and not s.requests


def test_stop_token_finishes_with_stop():
    s = make()
    s.add_request(Request("a", [1, 2], SamplingParams(temperature=0.0, max_tokens=5, stop_token_ids=(7,))))
    _, updates = run_step(s, {"a": 7})
    assert updates[0].finish_reason == "stop"


def test_youngest_running_request_is_preempted_and_recomputed_later():
    s = make(num_blocks=4, budget=32)
    s.add_request(req("old", 8, max_tokens=8))
    s.add_request(req("young", 7, max_tokens=8, first=50))
    run_step(s)  # old: blocks 0 1 (+1 token), young: blocks 2 3
    out, _ = run_step(s)  # old's 9th token needs a third block and the pool is full
    assert out.preempted_ids == ["young"]
    assert [c.request_id for c in out.chunks] == ["old"]
    young = s.requests["young"]
    assert young.status is RequestStatus.WAITING and young.num_computed_tokens == 0
    assert young.num_preemptions == 1 and s.waiting[0] is young
    # old took young's tail block; young's full first block stays free and cached for its return.
    assert s.kv.pool.num_free_blocks == 1


def test_request_that_can_never_fit_is_refused_with_a_reason():
    s = make(num_blocks=2, block_size=4)
    with pytest.raises(RequestTooLong, match="needs 3 KV blocks but the pool has 2"):
        s.add_request(req("a", 5, max_tokens=6))
    with pytest.raises(RequestTooLong, match="max_model_len"):
        make(max_model_len=10).add_request(req("b", 10))


def test_tool_waiting_request_keeps_its_blocks_and_is_skipped():
    s = make()
    s.add_request(req("a", 3))
    s.add_request(req("b", 3, first=10))
    run_step(s)
    s.requests["a"].pending_tool = True
    out, _ = run_step(s)
    assert [c.request_id for c in out.chunks] == ["b"]
    assert s.kv.block_ids("a") == [0]
    assert s.append_forced_tokens("a", [5, 6, 7]) is None
    out, _ = run_step(s)
    a_chunk = next(c for c in out.chunks if c.request_id == "a")
    assert a_chunk.token_ids == [1, 5, 6, 7] and a_chunk.start_pos == 3 and a_chunk.sample


def test_forced_tokens_past_max_tokens_finish_with_length():
    s = make()
    s.add_request(req("a", 3, max_tokens=3))
    run_step(s)
    assert s.append_forced_tokens("a", [5, 6]) == "length"
    assert "a" not in s.requests and s.kv.pool.num_free_blocks == 8


def test_max_num_seqs_bounds_the_running_batch():
    s = make(max_seqs=2)
    for i in range(3):
        s.add_request(req(f"r{i}", 2, first=10 * i))
    out, _ = run_step(s)
    assert [c.request_id for c in out.chunks] == ["r0", "r1"] and s.num_waiting == 1


def test_decodes_are_scheduled_before_running_chunks():
    s = make(budget=8)
    s.add_request(req("a", 2, max_tokens=20))
    s.add_request(req("b", 2, first=10))
    run_step(s)
    s.requests["a"].pending_tool = True
    run_step(s)
    assert (
        s.append_forced_tokens("a", [5, 6, 7, 8, 9, 10, 11]) is None
    )  # a now has 8 tokens to compute, b one
    out, _ = run_step(s)
    assert [(c.request_id, len(c.token_ids), c.sample) for c in out.chunks] == [
        ("b", 1, True),
        ("a", 7, False),
    ]
