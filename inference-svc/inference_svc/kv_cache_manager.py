"""Per-request block tables on top of the block pool, with prefix-cache lookups.

`allocate_slots` grows a request's table for the tokens about to be computed and returns None when
the pool cannot supply the blocks, so the scheduler can preempt and retry (vLLM v1's contract).
Full blocks are registered in the prefix cache as soon as their tokens are scheduled: the keys and
values are written before any attention reads them within a step, so a request scheduled later in
the same step may already reuse them.
"""

from __future__ import annotations

from inference_svc.block_pool import ROOT_HASH, BlockHash, BlockPool, KVBlock, hash_block
from inference_svc.request import Request


class KVCacheManager:
    def __init__(self, pool: BlockPool, block_size: int):
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.pool = pool
        self.block_size = block_size
        self.req_to_blocks: dict[str, list[KVBlock]] = {}
        # The same tables as block ids, kept alongside: the runner reads them every step, and
        # rebuilding them from the blocks cost a Python loop per block of every running sequence.
        self._req_to_ids: dict[str, list[int]] = {}
        self._req_hashes: dict[str, list[BlockHash]] = {}  # chained hashes of each full block so far
        self._num_registered: dict[str, int] = {}  # leading blocks of each table already offered to the cache
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache
        self.prefix_hits = 0  # of which found cached

    # --- prefix cache ------------------------------------------------------------------------------
    def get_computed_blocks(self, request: Request) -> tuple[list[KVBlock], int]:
        """The longest cached prefix of the request's tokens, as blocks and a token count.

        At least one token is always left to compute: its logits give the next token.
        """
        if not self.pool.enable_caching:
            return [], 0
        hashes = self._hashes(request)
        usable = (request.num_tokens - 1) // self.block_size
        blocks = []
        for block_hash in hashes[:usable]:
            block = self.pool.get_cached_block(block_hash)
            if block is None:
                break
            blocks.append(block)
        num_cached = len(blocks) * self.block_size
        self.prefix_queries += request.num_tokens
        self.prefix_hits += num_cached
        return blocks, num_cached

    # --- allocation --------------------------------------------------------------------------------
    def allocate_slots(
        self, request: Request, num_new_tokens: int, new_computed_blocks: list[KVBlock] | None = None
    ) -> list[KVBlock] | None:
        """Make room for `num_new_tokens` past the computed ones (plus `new_computed_blocks` reused
        from the cache); returns the newly allocated blocks, or None (and changes nothing) if short."""
        computed = new_computed_blocks or []
        table = self.req_to_blocks.setdefault(request.request_id, [])
        num_computed = request.num_computed_tokens + len(computed) * self.block_size
        total_tokens = num_computed + num_new_tokens
        need = -(-total_tokens // self.block_size) - len(table) - len(computed)
        if need <= 0 and not computed:  # the common decode step: room left in the last block
            self._cache_full_blocks(request, total_tokens)
            return []
        # Reused blocks that are currently free come out of the free queue, so they count against it.
        reclaimed = sum(1 for b in computed if b.ref_cnt == 0)
        if need + reclaimed > self.pool.num_free_blocks:
            if not table:
                del self.req_to_blocks[request.request_id]
            return None
        self.pool.touch(computed)
        new_blocks = self.pool.get_new_blocks(max(need, 0))
        table.extend(computed)
        table.extend(new_blocks)
        ids = self._req_to_ids.setdefault(request.request_id, [])
        ids.extend(b.block_id for b in computed)
        ids.extend(b.block_id for b in new_blocks)
        self._cache_full_blocks(request, total_tokens)
        return new_blocks

    def free(self, request: Request) -> None:
        """Return a request's blocks, tail first so shared prefixes stay cached the longest."""
        blocks = self.req_to_blocks.pop(request.request_id, [])
        self._req_to_ids.pop(request.request_id, None)
        self._req_hashes.pop(request.request_id, None)
        self._num_registered.pop(request.request_id, None)
        self.pool.free_blocks(reversed(blocks))

    def block_ids(self, request_id: str) -> list[int]:
        return list(self._req_to_ids.get(request_id, ()))

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- helpers -----------------------------------------------------------------------------------
    def _hashes(self, request: Request) -> list[BlockHash]:
        """Chained hashes of the request's full blocks, extended incrementally as it grows."""
        hashes = self._req_hashes.setdefault(request.request_id, [])
        bs = self.block_size
        parent = hashes[-1] if hashes else ROOT_HASH
        for start in range(len(hashes) * bs, request.num_tokens - bs + 1, bs):
            parent = hash_block(parent, request.token_ids[start : start + bs])
            hashes.append(parent)
        return hashes

    def _cache_full_blocks(self, request: Request, num_tokens: int) -> None:
        if not self.pool.enable_caching:
            return
        done = self._num_registered.get(request.request_id, 0)
        if num_tokens // self.block_size <= done:
            return  # no block filled up since the last call
        table = self.req_to_blocks[request.request_id]
        hashes = self._hashes(request)
        full = min(num_tokens // self.block_size, len(hashes))
        for i in range(done, full):
            self.pool.cache_full_block(table[i], hashes[i])
        self._num_registered[request.request_id] = max(done, full)
