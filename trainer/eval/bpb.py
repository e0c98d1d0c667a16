"""Bits per byte: the loss measure that does not depend on the tokenizer.

Cross-entropy per token rewards a tokenizer with short tokens (each is easier to predict). Dividing
the summed loss (converted to bits) by the UTF-8 bytes those target tokens stand for gives bits per
byte of text, the same quantity whatever the vocabulary: a model that spends 8 bits on every byte
scores 8.0 under any tokenizer. Special tokens stand for no text (0 bytes) and their loss is left
out, so the `<|bos|>` a document starts with neither helps nor hurts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

from chatforge.model import GPT, autocast_dtype


def bpb_totals(losses: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> tuple[float, float]:
    """(summed loss in nats, summed bytes) over targets that stand for text.

    `losses` and `targets` have the same shape; targets of -1 are ignored; `token_bytes[id]` is the
    UTF-8 length of token `id` (0 for special tokens).
    """
    if losses.shape != targets.shape:
        raise ValueError(f"losses {tuple(losses.shape)} and targets {tuple(targets.shape)} differ in shape")
    nbytes = token_bytes.to(losses.device, torch.float64)[targets.clamp(min=0)] * (targets != -1)
    nats = (losses.double() * (nbytes > 0)).sum()
    return float(nats), float(nbytes.sum())


def bits_per_byte_of(nats: float, nbytes: float) -> float:
    """Convert summed nats over summed bytes to bits per byte; NaN when there are no bytes."""
    return nats / (math.log(2) * nbytes) if nbytes > 0 else math.nan


@torch.no_grad()
def bits_per_byte(
    model: GPT,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    token_bytes: Sequence[int] | torch.Tensor,
) -> float:
    """Bits per byte of `model` on (inputs, targets) batches of shape (B, T)."""
    device = next(model.parameters()).device
    table = torch.as_tensor(token_bytes, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    nats = nbytes = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
            losses = model(x, y, loss_reduction="none")
        a, b = bpb_totals(losses, y, table)
        nats, nbytes = nats + a, nbytes + b
    model.train(was_training)
    return bits_per_byte_of(nats, nbytes)


def text_batches(
    token_docs: Sequence[Sequence[int]], *, bos_id: int, sequence_len: int, batch_rows: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Held-out documents (token ids) as (inputs, targets) rows: each document starts with `<|bos|>`,
    documents are concatenated and cut into rows of `sequence_len` targets; the tail is padded with
    -1 targets, so every document token is scored exactly once."""
    stream: list[int] = []
    for doc in token_docs:
        stream.append(bos_id)
        stream.extend(doc)
    rows_x, rows_y = [], []
    for start in range(0, max(len(stream) - 1, 0), sequence_len):
        chunk = stream[start : start + sequence_len + 1]
        x, y = chunk[:-1], chunk[1:]
        pad = sequence_len - len(x)
        rows_x.append(x + [bos_id] * pad)
        rows_y.append(y + [-1] * pad)
    return [
        (torch.tensor(rows_x[i : i + batch_rows]), torch.tensor(rows_y[i : i + batch_rows]))
        for i in range(0, len(rows_x), batch_rows)
    ]
