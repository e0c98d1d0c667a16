"""Block tables and prefix lookups on exact block ids."""

from __future__ import annotations

from inference_svc.block_pool import BlockPool
from inference_svc.kv_cache_manager import KVCacheManager
from inference_svc.request import Request

from chatforge.contracts.sampling import SamplingParams


def make(num_blocks=8, block_size=4, caching=True):
    return KVCacheManager(BlockPool(num_blocks, enable_caching=caching), block_size)


def req(rid, tokens):
    return Request(rid, list(tokens), SamplingParams(temperature=0.0, max_tokens=4))


def test_allocation_grows_the_table_block_by_block():
    kv = make()
    r = req("a", range(6))
    assert [b.block_id for b in kv.allocate_slots(r, 6)] == [0, 1]
    r.num_computed_tokens = 6
    assert kv.allocate_slots(r, 2) == []  # tokens 6, 7 still fit in block 1
    r.num_computed_tokens = 8
    assert [b.block_id for b in kv.allocate_slots(r, 1)] == [2]
    assert kv.block_ids("a") == [0, 1, 2]


def test_allocate_returns_none_and_changes_nothing_when_short():
    kv = make(num_blocks=3)
    kv.allocate_slots(req("a", range(8)), 8)
    before = kv.pool.free_block_ids()
    assert kv.allocate_slots(req("b", range(9)), 9) is None
    assert kv.pool.free_block_ids() == before and "b" not in kv.req_to_blocks


def test_shared_prefix_reuses_cached_blocks_and_counts_hits():
    kv = make()
    a = req("a", [1, 2, 3, 4, 5, 6, 7, 8, 9])
    kv.allocate_slots(a, 9)  # blocks 0, 1 full (cached), block 2 partial
    b = req("b", [1, 2, 3, 4, 5, 6, 7, 8, 50, 51])
    blocks, num_cached = kv.get_computed_blocks(b)
    assert [x.block_id for x in blocks] == [0, 1] and num_cached == 8
    assert kv.prefix_queries == 10 and kv.prefix_hits == 8
    b.num_computed_tokens = 0
    kv.allocate_slots(b, 2, blocks)
    assert kv.block_ids("b") == [0, 1, 3]
    assert [kv.pool.blocks[i].ref_cnt for i in (0, 1, 2, 3)] == [2, 2, 1, 1]


def test_at_least_one_token_is_left_to_compute():
    kv = make()
    a = req("a", range(8))
    kv.allocate_slots(a, 8)
    blocks, num_cached = kv.get_computed_blocks(req("b", range(8)))
    assert num_cached == 4 and len(blocks) == 1  # the last full block is recomputed for its logits


def test_freed_prefix_survives_and_is_evicted_tail_first():
    kv = make(num_blocks=4)
    a = req("a", range(12))
    kv.allocate_slots(a, 12)
    kv.free(a)
    assert kv.pool.free_block_ids() == [3, 2, 1, 0]  # tail first: the prefix block 0 is evicted last
    blocks, num_cached = kv.get_computed_blocks(req("b", list(range(12)) + [99]))
    assert [x.block_id for x in blocks] == [0, 1, 2] and num_cached == 12
    # A reused block that sat in the free queue counts against the free blocks.
    c = req("c", list(range(12)) + [99])
    assert kv.allocate_slots(c, 1, blocks) == [kv.pool.blocks[3]]
    assert kv.pool.num_free_blocks == 0


def test_no_caching_means_no_hits():
    kv = make(caching=False)
    kv.allocate_slots(req("a", range(8)), 8)
    assert kv.get_computed_blocks(req("b", range(9))) == ([], 0)
