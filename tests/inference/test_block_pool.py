"""The block pool on exact block ids: free-queue order, reference counts, the prefix hash map, eviction."""

from __future__ import annotations

import pytest
from inference_svc.block_pool import ROOT_HASH, BlockPool, OutOfBlocks, hash_block, hash_blocks


def ids(blocks):
    return [b.block_id for b in blocks]


def test_new_blocks_come_from_the_front_of_the_free_queue():
    pool = BlockPool(6)
    assert ids(pool.get_new_blocks(2)) == [0, 1]
    assert ids(pool.get_new_blocks(3)) == [2, 3, 4]
    assert pool.num_free_blocks == 1
    assert pool.usage() == pytest.approx(5 / 6)


def test_freed_blocks_join_the_back_in_the_order_given():
    pool = BlockPool(4)
    a = pool.get_new_blocks(3)  # 0 1 2; free queue: 3
    pool.free_blocks(reversed(a))
    assert pool.free_block_ids() == [3, 2, 1, 0]
    assert ids(pool.get_new_blocks(2)) == [3, 2]


def test_shared_block_is_free_only_after_the_last_reference():
    pool = BlockPool(3)
    (block,) = pool.get_new_blocks(1)
    pool.cache_full_block(block, hash_block(ROOT_HASH, [1, 2]))
    pool.touch([block])  # a second request reuses the cached block
    assert block.ref_cnt == 2
    pool.free_blocks([block])
    assert block.block_id not in pool.free_block_ids()
    pool.free_blocks([block])
    assert pool.free_block_ids() == [1, 2, 0]
    with pytest.raises(RuntimeError, match="freed more often"):
        pool.free_blocks([block])


def test_free_cached_block_is_reusable_until_evicted_in_lru_order():
    pool = BlockPool(2)
    b0, b1 = pool.get_new_blocks(2)
    h0, h1 = hash_block(ROOT_HASH, [7]), hash_block(ROOT_HASH, [8])
    pool.cache_full_block(b0, h0)
    pool.cache_full_block(b1, h1)
    pool.free_blocks([b0, b1])  # b0 is least recently freed
    assert pool.get_cached_block(h0) is b0
    pool.touch([pool.get_cached_block(h1)])  # reuse pulls b1 out of the free queue
    assert pool.free_block_ids() == [0]
    (fresh,) = pool.get_new_blocks(1)  # evicts b0's prefix
    assert fresh is b0 and fresh.block_hash is None
    assert pool.get_cached_block(h0) is None and pool.get_cached_block(h1) is b1
    assert pool.num_evictions == 1


def test_first_block_with_a_hash_wins_and_duplicates_stay_private():
    pool = BlockPool(2)
    a, b = pool.get_new_blocks(2)
    h = hash_block(ROOT_HASH, [1, 2, 3])
    pool.cache_full_block(a, h)
    pool.cache_full_block(b, h)
    assert pool.get_cached_block(h) is a and b.block_hash is None


def test_asking_for_too_many_blocks_fails_without_taking_any():
    pool = BlockPool(2)
    with pytest.raises(OutOfBlocks):
        pool.get_new_blocks(3)
    assert pool.num_free_blocks == 2


def test_hashes_are_chained_over_the_whole_prefix():
    a = hash_blocks([1, 2, 3, 4, 5], block_size=2)
    b = hash_blocks([9, 9, 3, 4], block_size=2)
    assert len(a) == 2 and len(b) == 2  # the trailing partial block has no hash
    assert a[1] != b[1]  # same tokens [3, 4] after a different prefix: a different key
    assert a == hash_blocks([1, 2, 3, 4], block_size=2)


def test_reset_forgets_every_prefix():
    pool = BlockPool(1)
    (block,) = pool.get_new_blocks(1)
    h = hash_block(ROOT_HASH, [1])
    pool.cache_full_block(block, h)
    pool.reset_prefix_cache()
    assert pool.get_cached_block(h) is None and block.block_hash is None
