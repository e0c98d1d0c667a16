"""The batched sampler and the stop rules, for `chatforge.contracts.sampling.SamplingParams`.

Greedy rows are one batched argmax. Other rows follow `chatforge.model.sample_next` step for step
(temperature, then top-k, then top-p, then a draw from the request's own `torch.Generator`), so a
seeded request draws the same tokens whatever else shares its batch.

A row that cannot be sampled (NaN logits; a draw that torch refuses, e.g. after an infinite logit)
is that row's failure, not the batch's: `sample` returns a `SamplingError` in its place and the
engine ends only that request (docs/architecture.md, "one request's failure").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from chatforge.contracts.generate import FinishReason
from chatforge.contracts.sampling import SamplingParams


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """A request's private random stream: seeded when asked, else from the OS; none when greedy."""
    if params.greedy:
        return None
    generator = torch.Generator(device=device)
    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    generator.manual_seed(seed)
    return generator


class SamplingError(RuntimeError):
    """One row could not be sampled; the message says why (it goes to that request's error event)."""


def sample(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int | SamplingError]:
    """One token per row of `logits` (rows, vocab) under each row's parameters, or that row's
    `SamplingError`; the other rows are drawn exactly as without it."""
    out: list[int | SamplingError] = list(torch.argmax(logits, dim=-1).tolist())
    # argmax over a NaN row "succeeds" (NaN compares as the largest), so NaN is checked, not caught.
    nan_rows = set(torch.isnan(logits).any(dim=-1).nonzero().flatten().tolist())
    for row, (p, generator) in enumerate(zip(params, generators, strict=True)):
        if row in nan_rows:
            out[row] = SamplingError("the model produced NaN logits for this sequence")
        elif not p.greedy:
            try:
                out[row] = _sample_row(logits[row], p, generator)
            except SamplingError as e:
                out[row] = e
            except RuntimeError as e:  # anything else torch refuses for this row
                out[row] = SamplingError(f"sampling failed: {e}")
    return out


def _sample_row(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None) -> int:
    logits = logits.float() / p.temperature
    if p.top_k and p.top_k < logits.size(-1):
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep each token whose preceding mass is below top_p, and always the most likely one: a
        # top_p under float32's range compares as 0, which would drop every token.
        drop = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= p.top_p
        drop[0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    # Checked here, not left to torch.multinomial: on CUDA an invalid distribution is a device-side
    # assert, which kills the whole process's CUDA context instead of raising for this row.
    if bool(~torch.isfinite(probs).all() | (probs.sum() <= 0)):
        raise SamplingError("sampling failed: the distribution is not finite (an infinite or NaN logit)")
    return int(torch.multinomial(probs, 1, generator=generator))


def check_stop(
    token_id: int, num_output_tokens: int, num_tokens: int, params: SamplingParams, max_model_len: int
) -> FinishReason | None:
    """Finish reason after a new token: a stop id, max_tokens, or the model's context length."""
    if token_id in params.stop_token_ids:
        return "stop"
    if num_output_tokens >= params.max_tokens or num_tokens >= max_model_len:
        return "length"
    return None


@dataclass
class StopStrings:
    """Cuts the text stream at the first stop string, holding back any tail that may start one."""

    stops: tuple[str, ...]
    text: str = ""
    emitted: int = 0
    _longest: int = field(init=False)

    def __post_init__(self) -> None:
        self._longest = max((len(s) for s in self.stops), default=0)

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add new text; returns (text safe to emit now, whether a stop string matched)."""
        if not self.stops:
            return delta, False
        self.text += delta
        window_start = max(0, self.emitted - self._longest + 1)
        hits = [i for s in self.stops if (i := self.text.find(s, window_start)) != -1]
        if hits:
            end = min(hits)
            out, self.emitted = self.text[self.emitted : end], end
            return out, True
        safe = len(self.text) - self._held_back()
        out = self.text[self.emitted : max(safe, self.emitted)]
        self.emitted = max(safe, self.emitted)
        return out, False

    def flush(self) -> str:
        out, self.emitted = self.text[self.emitted :], len(self.text)
        return out

    def _held_back(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        for n in range(min(self._longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
