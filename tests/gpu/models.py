"""The small random-weight GPTs the GPU tests run, in the shapes whose kernels differ.

`tests/inference/conftest.py:make_tiny_model` gives each a real attention pattern and well separated
greedy choices. The head sizes are those `GPTConfig.from_depth` gives (64 below d8, 128 from d8 up),
since FlexAttention and SDPA pick their kernels by head size: head64 with plain multi-head attention
(the presets' kv_group=1), head128 with 2 query heads sharing one key/value head (GQA).
"""

from __future__ import annotations

import torch

from chatforge.model import GPT, GPTConfig
from tests.inference.conftest import TINY, make_tiny_model

SHAPES = {
    "head64": GPTConfig(vocab_size=512, n_layer=2, n_embd=128, n_head=2, n_kv_head=2, sequence_len=512),
    "head128": GPTConfig(vocab_size=512, n_layer=2, n_embd=256, n_head=2, n_kv_head=1, sequence_len=512),
}


def small_model(shape: str, device: torch.device, dtype: torch.dtype = torch.float32) -> GPT:
    config = SHAPES[shape]
    model = make_tiny_model(config)
    # make_tiny_model's unit-scale head gives logits of std ~sqrt(width): at width 256 the top ones
    # all sit against the softcap of 15, and near-ties would be everywhere. Scaled to its 64-wide
    # TINY's spread (std ~8), the top-2 gap has a median of ~0.3 in both shapes (measured on CPU).
    with torch.no_grad():
        model.lm_head.weight.mul_((TINY.n_embd / config.n_embd) ** 0.5)
    return model.to(device, dtype).eval()
