"""The small random-weight GPTs the GPU tests run, in the shapes whose kernels differ.

`tests/inference/conftest.py:make_tiny_model` gives each a real attention pattern and well separated
greedy choices. Two shapes: its own TINY (head size 16, 4 query heads over 2 key/value heads) and
HEAD128, the head size every model from d8 up has (chatforge.model.MAX_HEAD_DIM), with 2 query
heads sharing one key/value head: FlexAttention and SDPA pick their kernels by head size and GQA.
"""

from __future__ import annotations

import torch

from chatforge.model import GPT, GPTConfig
from tests.inference.conftest import TINY, make_tiny_model

SHAPES = {
    "tiny": TINY,
    "head128": GPTConfig(vocab_size=512, n_layer=2, n_embd=256, n_head=2, n_kv_head=1, sequence_len=512),
}


def small_model(shape: str, device: torch.device, dtype: torch.dtype = torch.float32) -> GPT:
    config = SHAPES[shape]
    model = make_tiny_model(config)
    # make_tiny_model's unit-scale head gives logits of std ~sqrt(width): at width 256 the top ones
    # all sit against the softcap of 15, and near-ties would be everywhere. Scaled to the 64-wide
    # model's spread (std ~8), the top-2 gap has a median of ~0.3 in both shapes (measured on CPU).
    with torch.no_grad():
        model.lm_head.weight.mul_((TINY.n_embd / config.n_embd) ** 0.5)
    return model.to(device, dtype).eval()
