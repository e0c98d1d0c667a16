"""The tokenizer's fixed ids, part of every seam that carries token ids (docs/contracts.md).

Torch- and tokenizer-library-free, so a job spec can check a vocabulary size without loading the
tokenizer: the special tokens come after the 256 byte tokens and the merges, in this order.
"""

from __future__ import annotations

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|bos|>",  # starts every document; also the document separator in pretraining
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",  # the assistant calls the python tool
    "<|python_end|>",
    "<|output_start|>",  # the tool's output, written back into the assistant turn
    "<|output_end|>",
)

MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte tokens and the special tokens, no merges
