"""FlexAttention over the paged pool against the portable path (gather + SDPA), on the test device.

The portable path is the reference (`tests/inference/test_paged_attention.py` checks it against
plain attention token by token). Steps of decodes, of chunked prefills (a fresh chunk, and chunks
continuing after cached context, block-aligned or not) and of both, in the runner's order (decodes
first, longest table first), with GQA and the head sizes of the small and the d8+ models.

Tolerances: float32 to 1e-4, which IEEE float32 attention meets with a wide margin (~1e-6) and TF32
matrix units inside the fused kernel (~1e-3) would not, and TF32 there would make the float32
engine drift from the reference; bfloat16 to 2e-2, a few units of bf16's 2^-8 relative rounding on
outputs of magnitude ~1, the bound `paged_attention._probe` applies before serving with flex.
"""

from __future__ import annotations

import random

import pytest
import torch
from inference_svc.paged_attention import KVCache, PortableAttention, build_metadata, make_backend

BLOCK, HKV, HQ, NUM_BLOCKS = 16, 2, 4, 96
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 2e-2}

# (start position, tokens computed) per sequence, in the runner's order.
STEPS = {
    "decodes": [(130, 1), (77, 1), (40, 1), (15, 1), (0, 1)],
    "chunked_prefill": [(0, 37), (48, 20), (21, 16)],  # fresh; after 3 cached blocks; mid-block
    "mixed": [(200, 1), (130, 1), (3, 1), (0, 25), (33, 12), (64, 1)],
}


def make_cache(head_dim: int, dtype: torch.dtype, device: torch.device) -> KVCache:
    cache = KVCache(
        num_layers=1, num_blocks=NUM_BLOCKS, block_size=BLOCK, n_kv_head=HKV, head_dim=head_dim,
        dtype=dtype, device=device,
    )  # fmt: skip
    gen = torch.Generator(device="cpu").manual_seed(head_dim)
    cache.k[0].copy_(torch.randn(cache.k[0].shape, generator=gen))  # old context of every sequence
    cache.v[0].copy_(torch.randn(cache.v[0].shape, generator=gen))
    return cache


def step_inputs(specs, head_dim: int, dtype: torch.dtype, device: torch.device, seed: int):
    """Block tables drawn from a shuffled pool (sequences interleave in memory, as after churn), and
    fresh queries, keys and values for the step's rows."""
    rng = random.Random(seed)
    free = list(range(NUM_BLOCKS))
    rng.shuffle(free)
    chunks = [(start, [free.pop() for _ in range(-(-(start + n) // BLOCK))]) for start, n in specs]
    counts = [n for _, n in specs]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    rows = sum(counts)
    q, k, v = (torch.randn(1, rows, h, head_dim, generator=gen) for h in (HQ, HKV, HKV))
    return chunks, counts, *(t.to(device, dtype) for t in (q, k, v))


def assert_flex_equals_portable(flex, cache, specs, head_dim, dtype, device, seed, window=None):
    chunks, counts, q, k, v = step_inputs(specs, head_dim, dtype, device, seed)
    # each backend gets its own metadata: flex keeps its block mask in it
    portable = PortableAttention(cache).bind(build_metadata(chunks, counts, BLOCK, device))
    want = portable.attend(0, q, k, v, window=window)
    got = flex.bind(build_metadata(chunks, counts, BLOCK, device)).attend(0, q, k, v, window=window)
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(got.float(), want.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("step", list(STEPS))
def test_flex_equals_the_portable_path(device, step, head_dim, dtype):
    cache = make_cache(head_dim, dtype, device)
    flex = make_backend(cache, "flex", device)  # compiled on CUDA, as the engine builds it
    assert flex.name == "flex"
    assert_flex_equals_portable(flex, cache, STEPS[step], head_dim, dtype, device, seed=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_flex_equals_the_portable_path_in_a_sliding_window_layer(device, dtype):
    """A layer that sees its last 24 positions (docs/model.md): shorter than most contexts of the
    mixed step, decodes and chunked prefills alike, so the compiled mask must apply it."""
    cache = make_cache(64, dtype, device)
    flex = make_backend(cache, "flex", device)
    assert_flex_equals_portable(flex, cache, STEPS["mixed"], 64, dtype, device, seed=2, window=24)


def test_one_flex_backend_serves_steps_of_changing_shapes(device):
    """The engine keeps one backend for its life while every step has another number of rows and
    other tables: the compiled kernel (dynamic shapes) must stay right across them."""
    cache = make_cache(128, torch.bfloat16, device)
    flex = make_backend(cache, "flex", device)
    for seed, specs in enumerate([*STEPS.values(), [(5, 1)], [(0, 100)], STEPS["decodes"] * 3]):
        assert_flex_equals_portable(flex, cache, specs, 128, torch.bfloat16, device, seed)


def test_auto_picks_flex_on_cuda_and_portable_elsewhere(device):
    backend = make_backend(make_cache(128, torch.bfloat16, device), "auto", device)
    assert backend.name == ("flex" if device.type == "cuda" else "portable")
