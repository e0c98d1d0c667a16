"""The block pool: every KV-cache block, its reference count, the free queue and the prefix hash map.

Pure Python on integers (no tensors): the tensors live in `paged_attention.KVCache` and are indexed
by the block ids handed out here. A block is in exactly one of two states:

- in use: `ref_cnt > 0` (several requests may share a cached prefix block);
- free: `ref_cnt == 0`, in the free queue. A free block may still hold a cached prefix (it keeps its
  hash); it stays reusable by a later request until it is evicted, which happens in LRU order when
  a new block is needed and it reaches the front of the queue.

Prefix blocks are keyed by a hash chained over (parent block hash, this block's tokens), so equal
keys mean equal full prefixes, not only equal 16-token windows (vLLM's scheme). sha256 makes an
accidental collision, which would silently corrupt an answer, practically impossible.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

BlockHash = bytes
ROOT_HASH: BlockHash = b"chatforge-kv-root"


class OutOfBlocks(RuntimeError):
    """More blocks were asked for than are free; callers check `num_free_blocks` first."""


@dataclass
class KVBlock:
    block_id: int
    ref_cnt: int = 0
    block_hash: BlockHash | None = None  # set once the block is full and registered in the cache


def hash_block(parent: BlockHash, tokens: Sequence[int]) -> BlockHash:
    """The chained key of one full block: sha256(parent hash ‖ token ids as int64)."""
    return hashlib.sha256(parent + array("q", tokens).tobytes()).digest()


def hash_blocks(tokens: Sequence[int], block_size: int, parent: BlockHash = ROOT_HASH) -> list[BlockHash]:
    """Chained hashes of every full block of `tokens` (a trailing partial block has none)."""
    hashes = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash_block(parent, tokens[start : start + block_size])
        hashes.append(parent)
    return hashes


class BlockPool:
    """`num_blocks` blocks; hands out free ones (evicting cached prefixes in LRU order) and takes them back."""

    def __init__(self, num_blocks: int, *, enable_caching: bool = True):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        # Insertion order is eviction order: popitem(last=False) takes the least recently freed.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._cached: dict[BlockHash, int] = {}
        self.num_evictions = 0

    # --- queries ---------------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def usage(self) -> float:
        """Fraction of blocks in use (0–1); free blocks holding a cached prefix count as free."""
        return 1.0 - len(self._free) / self.num_blocks

    def free_block_ids(self) -> list[int]:
        """Free blocks in eviction order (next to be reused first)."""
        return list(self._free)

    def get_cached_block(self, block_hash: BlockHash) -> KVBlock | None:
        block_id = self._cached.get(block_hash)
        return None if block_id is None else self.blocks[block_id]

    # --- taking blocks ---------------------------------------------------------------------------
    def get_new_blocks(self, n: int) -> list[KVBlock]:
        """`n` blocks from the front of the free queue, each with ref_cnt 1 and no cached prefix."""
        if n > len(self._free):
            raise OutOfBlocks(f"asked for {n} blocks, {len(self._free)} free")
        out = []
        for _ in range(n):
            block_id, _ = self._free.popitem(last=False)
            block = self.blocks[block_id]
            if block.block_hash is not None:
                self._evict(block)
            block.ref_cnt = 1
            out.append(block)
        return out

    def touch(self, blocks: Iterable[KVBlock]) -> None:
        """Take a reference on cached blocks a request reuses (pulling free ones out of the queue)."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self._free[block.block_id]
            block.ref_cnt += 1

    def cache_full_block(self, block: KVBlock, block_hash: BlockHash) -> None:
        """Register a full block under its chained hash; the first block with a given hash wins."""
        if not self.enable_caching or block.block_hash is not None:
            return
        if block_hash in self._cached:
            return  # the same prefix computed twice in one step: keep the first, this one stays private
        block.block_hash = block_hash
        self._cached[block_hash] = block.block_id

    # --- giving blocks back ----------------------------------------------------------------------
    def free_blocks(self, blocks: Iterable[KVBlock]) -> None:
        """Drop one reference from each block; blocks reaching 0 join the back of the free queue in
        the order given (callers pass a sequence's tail first, so its prefix is evicted last)."""
        for block in blocks:
            if block.ref_cnt <= 0:
                raise RuntimeError(f"block {block.block_id} freed more often than it was taken")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self._free[block.block_id] = None

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix (after loading other weights the cached keys are wrong)."""
        for block in self.blocks:
            block.block_hash = None
        self._cached.clear()

    def _evict(self, block: KVBlock) -> None:
        assert block.block_hash is not None
        if self._cached.get(block.block_hash) == block.block_id:
            del self._cached[block.block_hash]
        block.block_hash = None
        self.num_evictions += 1
