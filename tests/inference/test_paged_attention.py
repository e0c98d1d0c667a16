"""The portable paged attention against plain attention over each sequence's own keys."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from inference_svc import paged_attention
from inference_svc.paged_attention import FlexPagedAttention, KVCache, PortableAttention, build_metadata

BLOCK, HKV, HQ, D = 4, 2, 4, 8


def naive(cache: KVCache, chunks, counts, q: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Each row attends over positions 0..its own of its sequence (the last `window` of them with a
    window), read token by token from the pool."""
    out, row = [], 0
    for (start, blocks), n in zip(chunks, counts, strict=True):
        for i in range(n):
            pos = start + i
            first = 0 if window is None else max(0, pos - window + 1)
            slots = [blocks[p // BLOCK] * BLOCK + p % BLOCK for p in range(first, pos + 1)]
            k = cache.k[0].view(-1, HKV, D)[slots].transpose(0, 1)  # (Hkv, L, D)
            v = cache.v[0].view(-1, HKV, D)[slots].transpose(0, 1)
            y = F.scaled_dot_product_attention(q[0, row].unsqueeze(1), k, v, enable_gqa=True)
            out.append(y.squeeze(1))
            row += 1
    return torch.stack(out).unsqueeze(0)


@pytest.mark.parametrize(
    ("backend", "window"), [("portable", None), ("portable", 5), ("portable", 1), ("flex", None), ("flex", 5)]
)
def test_decode_groups_and_prefills_in_any_order_match_plain_attention(monkeypatch, backend, window):
    """Windows of 5 and 1 are shorter than most contexts here, prefills and decodes alike (a path
    that ignored the window would attend over the whole context and fail); FlexAttention runs
    eagerly on the CPU, enough to check its block mask."""
    # A small padding allowance splits the decodes into several groups, as long contexts do.
    monkeypatch.setattr(paged_attention, "MAX_DECODE_PADDING_SLOTS", 6)
    rng = random.Random(0)
    num_blocks = 64
    cache = KVCache(
        num_layers=1,
        num_blocks=num_blocks,
        block_size=BLOCK,
        n_kv_head=HKV,
        head_dim=D,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )
    torch.manual_seed(0)
    cache.k[0].normal_()
    cache.v[0].normal_()
    free = list(range(num_blocks))
    rng.shuffle(free)

    def table(length: int) -> list[int]:
        return [free.pop() for _ in range(-(-length // BLOCK))]

    # Decodes sorted longest first, an unsorted decode after a prefill chunk, a fresh prompt.
    specs = [(30, 1), (21, 1), (20, 1), (9, 1), (2, 1), (12, 5), (17, 1), (0, 7), (1, 1)]
    chunks = [(start, table(start + n)) for start, n in specs]
    counts = [n for _, n in specs]
    meta = build_metadata(chunks, counts, BLOCK, torch.device("cpu"))
    assert len(meta.decode_groups) >= 4  # split by padding, and by the prefill between decodes
    rows = sum(counts)
    q = torch.randn(1, rows, HQ, D)
    k = torch.randn(1, rows, HKV, D)
    v = torch.randn(1, rows, HKV, D)
    attention = (
        PortableAttention(cache) if backend == "portable" else FlexPagedAttention(cache, compile=False)
    )
    got = attention.bind(meta).attend(0, q, k, v, window=window)
    want = naive(cache, chunks, counts, q, window)  # the new keys are in the pool now
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
