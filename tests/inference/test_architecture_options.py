"""The architecture options (GPTConfig's window_pattern, value_embeds, n_kv_head) in every forward:
the training path (no attention backend, a sliding window as a mask), an independent oracle (each
query attends over its window key by key), the full-recompute `GPT.generate`, and the paged engine
(portable and FlexAttention paths, chunked prefills, batched decodes, prefix-cache hits).

Each option also changes the logits of the same weights, so a forward that ignored it would fail
here: the short window is shorter than the prompts, and the value embeddings carry weight.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from inference_svc.config import EngineConfig
from inference_svc.engine import LLMEngine
from inference_svc.paged_attention import FlexPagedAttention, KVCache, PortableAttention, build_metadata

from chatforge.contracts.sampling import SamplingParams
from chatforge.model import GPT, GPTConfig

from .conftest import make_tiny_model, reference
from .test_engine_correctness import assert_no_leak, prompts_of, run_all, tokens

BASE = GPTConfig(vocab_size=300, n_layer=3, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256)
OPTIONS = {
    "window": dict(window_pattern="SL", short_window=8),  # layers S, L, L: layer 0 sees 8 tokens
    "value_embeds": dict(value_embeds=True),  # layers 0 and 2
    "gqa": dict(n_kv_head=1),  # four query heads share one key/value head
    "all": dict(window_pattern="S", short_window=8, value_embeds=True, n_kv_head=1),  # S, S, L
}


@pytest.fixture(scope="module", params=list(OPTIONS))
def option(request) -> tuple[str, GPT]:
    return request.param, make_tiny_model(replace(BASE, **OPTIONS[request.param]), seed=1)


class Oracle:
    """Attention the slow, obvious way: each query over its own window of keys, one at a time."""

    def __init__(self, windows: list[int | None]):
        self.windows = windows

    def attend(self, layer, q, k, v, *, window):
        assert window == self.windows[layer]  # the model hands each layer its own window
        B, T, H, D = q.shape
        group = H // k.size(2)
        out = torch.empty_like(q)
        for p in range(T):
            first = 0 if window is None else max(0, p - window + 1)
            keys = k[:, first : p + 1].repeat_interleave(group, dim=2)  # (B, L, H, D)
            values = v[:, first : p + 1].repeat_interleave(group, dim=2)
            scores = torch.einsum("bhd,blhd->bhl", q[:, p], keys) / math.sqrt(D)
            out[:, p] = torch.einsum("bhl,blhd->bhd", scores.softmax(-1), values)
        return out


def test_config_lists_each_layers_window_and_value_embedding():
    c = replace(BASE, n_layer=6, window_pattern="SSL", value_embeds=True)
    assert c.short_window == 64  # a quarter of the 256-token context, fixed as a number
    assert c.layer_windows() == [64, 64, None, 64, 64, None]
    assert c.value_embed_layers() == [1, 3, 5]  # alternate layers, the last included
    assert replace(c, n_layer=5).layer_windows()[-1] is None  # the last layer always sees everything
    assert GPTConfig.from_dict(c.to_dict()) == c
    assert GPTConfig.from_dict(replace(c, sequence_len=1024).to_dict()).short_window == 64
    assert BASE.short_window == 0 and BASE.layer_windows() == [None, None, None]  # no short layer
    for bad in ("", "SXL", "S" * 65):
        with pytest.raises(ValueError, match="window_pattern"):
            replace(BASE, window_pattern=bad)


def test_training_forward_matches_the_oracle_and_the_option_matters(option):
    name, model = option
    x = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, dims=1)
    trained = model(x)  # the training path: SDPA with a sliding-window mask where a layer has one
    positions = torch.arange(40).expand(2, 40)
    oracle = model(x, positions=positions, attention=Oracle(model.config.layer_windows()))
    torch.testing.assert_close(trained, oracle, rtol=1e-4, atol=1e-4)
    loss = model(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(oracle.flatten(0, 1), y.flatten()), rtol=1e-4, atol=1e-4)
    # the same weights without the option give other logits: a forward that ignored it would fail
    if name != "gqa":  # (GQA changes the weights' shapes, so there is no "same weights without")
        plain = replace(model.config, window_pattern="L", value_embeds=False)
        without = GPT(plain)
        without.load_state_dict(model.state_dict(), strict=False)
        assert (without.eval()(x) - trained).abs().max() > 1e-2


@pytest.mark.parametrize("backend", ["portable", "flex"])
def test_paged_forward_logits_equal_the_full_forward(option, backend):
    """A 40-token prompt in two chunks (the second after the first's keys are cached), then six
    decodes, every row's logits against the full forward of the same tokens."""
    _, model = option
    c = model.config
    cache = KVCache(
        num_layers=c.n_layer, num_blocks=8, block_size=16, n_kv_head=c.n_kv_head, head_dim=c.head_dim,
        dtype=torch.float32, device=torch.device("cpu"),
    )  # fmt: skip
    attention = (
        PortableAttention(cache) if backend == "portable" else FlexPagedAttention(cache, compile=False)
    )
    seq = prompts_of(1, 46, 46, seed=3)[0]
    blocks = [5, 2, 7]  # out of order, as the pool hands them out
    full = model(torch.tensor([seq]))[0]
    steps = [(0, 25), (25, 15)] + [(p, 1) for p in range(40, 46)]
    with torch.no_grad():
        for start, n in steps:
            meta = build_metadata([(start, blocks)], [n], 16, torch.device("cpu"))
            ids = torch.tensor([seq[start : start + n]])
            got = model(ids, positions=meta.positions.view(1, -1), attention=attention.bind(meta))[0]
            torch.testing.assert_close(got, full[start : start + n], rtol=1e-4, atol=1e-4)


def test_engine_greedy_tokens_equal_generate(option):
    """Concurrent requests of 1-90 tokens with a small step budget (chunked prefills interleaved
    with decodes), then a shared prefix served from the cache: token for token as GPT.generate."""
    name, model = option
    engine = LLMEngine(model, EngineConfig(num_blocks=96, max_num_batched_tokens=48, attention="portable"))
    assert engine.runner.cache.k[0].shape[2] == model.config.n_kv_head  # the cache holds the KV heads only
    prompts = prompts_of(6, 1, 90, seed=4)
    outs = run_all(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=12)] * 6)
    for prompt, items in zip(prompts, outs, strict=True):
        assert tokens(items) == reference(model, prompt, 12), name
    system = prompts_of(1, 40, 40, seed=5)[0]
    shared = [system + tail for tail in prompts_of(3, 3, 9, seed=6)]
    run_all(engine, shared[:1], [SamplingParams(temperature=0.0, max_tokens=8)])
    rest = run_all(engine, shared[1:], [SamplingParams(temperature=0.0, max_tokens=8)] * 2)
    assert engine.kv.prefix_hits > 0
    for prompt, items in zip(shared[1:], rest, strict=True):
        assert tokens(items) == reference(model, prompt, 8), name
    assert_no_leak(engine)


def test_engine_flex_path_greedy_tokens_equal_generate():
    model = make_tiny_model(replace(BASE, **OPTIONS["all"]), seed=1)
    engine = LLMEngine(model, EngineConfig(num_blocks=12, attention="flex", max_num_batched_tokens=16))
    prompts = [prompts_of(1, 30, 30, seed=7)[0], [7, 8, 9]]  # the first prefilled in two chunks
    outs = run_all(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=6)] * 2)
    for prompt, items in zip(prompts, outs, strict=True):
        assert tokens(items) == reference(model, prompt, 6)
    assert engine.runner.backend.name == "flex"
    assert_no_leak(engine)
