"""Fixtures for the evaluation tests: a tiny random GPT over the session's tiny tokenizer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    """A depth-1 GPT (64 wide) with random weights: enough to exercise every scoring path."""
    import torch

    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=tiny_tokenizer.vocab_size, n_layer=1, n_embd=64, n_head=2, n_kv_head=2, sequence_len=256
    )
    model = GPT(config)
    # Non-zero output projections and head: a freshly initialised GPT predicts near-uniformly.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()
