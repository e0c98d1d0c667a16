"""A tiny random-weight GPT whose greedy choices are clear-cut, shared by the engine tests."""

from __future__ import annotations

import pytest
import torch

from chatforge.model import GPT, GPTConfig

TINY = GPTConfig(vocab_size=300, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=256)


def make_tiny_model(config: GPTConfig = TINY, seed: int = 0) -> GPT:
    """nanochat's init zeroes the output projections and nearly zeroes the head, which makes every
    block the identity and every logit ~0 (argmax decided by float noise). Random non-zero
    projections and a unit-scale head give a model with real attention and well separated logits,
    so exact token equality with the reference is a fair test."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for block in model.blocks:
            torch.nn.init.normal_(block.attn.c_proj.weight, std=0.2)
            torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
        torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    return model.eval()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tiny models run fastest on one thread, and on a shared machine OpenMP's spinning
    threads made the suite 50x slower (measured: 72 s vs 0.7 s for the same 320 forwards).
    Restored afterwards, so other parts' tests keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model() -> GPT:
    return make_tiny_model()


def reference(model: GPT, prompt: list[int], max_tokens: int) -> list[int]:
    """The oracle: full-recompute greedy generation."""
    return list(model.generate(prompt, max_tokens))
