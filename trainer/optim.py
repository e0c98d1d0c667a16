"""Optimisation: Muon for the block matrices, AdamW for the embeddings and head, and the LR schedule.

Muon (Keller Jordan, 2024) replaces each 2-D weight's update by the nearest semi-orthogonal matrix
to its Nesterov momentum, computed with a few Newton–Schulz iterations. It trains transformer
matrices faster than AdamW per step; embeddings and the output head are not matrices in that sense
(one row per token) and stay on AdamW, as in nanochat and the modded-nanogpt speedruns.

Every rank runs the same update on the same all-reduced gradients, so the weights stay identical
across ranks without being broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from chatforge.contracts.training import OptimConfig
from chatforge.model import GPT

# Newton–Schulz quintic coefficients from Keller Jordan's Muon: they push every singular value into
# roughly [0.7, 1.2] in 5 steps, which works as well as exact orthogonalisation and is much cheaper.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Approximately U·Vᵀ of g = U·S·Vᵀ, by Newton–Schulz; in `dtype`, by default bfloat16 on CUDA
    and float32 on CPU (where bf16 matmuls are slow; the GPU check's golden asks for bf16 there to
    measure what the GPU's rounding does to a CPU run)."""
    a, b, c = NS_COEFFS
    x = g.to(dtype or (torch.bfloat16 if g.is_cuda else torch.float32))
    transposed = x.size(0) > x.size(1)
    if transposed:  # iterate on the short side: X·Xᵀ is then the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # spectral norm <= Frobenius norm <= 1, inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.T
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, then orthogonalise, then step; for 2-D parameters only."""

    def __init__(
        self, params: Iterable[torch.Tensor], lr: float, momentum: float = 0.95, nesterov: bool = True
    ):
        params = list(params)
        bad = [tuple(p.shape) for p in params if p.ndim != 2]
        if bad:
            raise ValueError(f"Muon takes 2-D parameters only, got shapes {bad}")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - group["momentum"])
                g = p.grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = orthogonalize(g)
                # scale so that the update's RMS does not shrink for tall matrices (Keller Jordan)
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.add_(update, alpha=-group["lr"] * scale)


def build_optimizers(model: GPT, config: OptimConfig) -> list[torch.optim.Optimizer]:
    """[AdamW for embedding + head (+ value embeddings), Muon for the block matrices]; each group
    keeps its base LR."""
    groups = model.param_groups()
    width = model.config.n_embd
    # nanochat: AdamW LRs were tuned at width 768 and scale with 1/sqrt(width)
    scale = (width / 768) ** -0.5
    adam_groups: list[dict[str, Any]] = [
        {"params": groups["embedding"], "lr": config.embedding_lr * scale},
        {"params": groups["lm_head"], "lr": config.unembedding_lr * scale},
    ]
    if groups["value_embeds"]:  # only when the option is on: a model without keeps its two groups
        # nanochat trains the value embeddings at half the input embedding's LR
        adam_groups.append({"params": groups["value_embeds"], "lr": 0.5 * config.embedding_lr * scale})
    adam = torch.optim.AdamW(
        adam_groups,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=1e-10,
        weight_decay=config.weight_decay,
    )
    muon = Muon(groups["matrix"], lr=config.matrix_lr, momentum=config.muon_momentum)
    optimizers: list[torch.optim.Optimizer] = [adam, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["base_lr"] = group["lr"]
    return optimizers


def lr_multiplier(step: int, num_steps: int, config: OptimConfig) -> float:
    """Warmup (linear from 0), constant, then warmdown (linear to final_lr_frac) over the last steps."""
    warmup = round(config.warmup_ratio * num_steps)
    warmdown = round(config.warmdown_ratio * num_steps)
    if step < warmup:
        return (step + 1) / warmup
    if step < num_steps - warmdown:
        return 1.0
    progress = (num_steps - step) / max(warmdown, 1)  # 1 at the start of warmdown, ~0 at the end
    return progress + (1 - progress) * config.final_lr_frac


def muon_momentum(step: int, config: OptimConfig) -> float:
    """Muon's momentum ramps from muon_momentum_start to muon_momentum over the first steps."""
    frac = min(step / max(config.muon_momentum_warmup_steps, 1), 1.0)
    return (1 - frac) * config.muon_momentum_start + frac * config.muon_momentum


def apply_schedule(
    optimizers: list[torch.optim.Optimizer], step: int, num_steps: int, config: OptimConfig
) -> float:
    """Set every group's LR (and Muon's momentum) for `step`; returns the LR multiplier."""
    mult = lr_multiplier(step, num_steps, config)
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * mult
            if isinstance(opt, Muon):
                group["momentum"] = muon_momentum(step, config)
    return mult


def clip_grad_norm(model: torch.nn.Module, max_norm: float) -> float:
    """Clip the global gradient norm (0 = off); returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm <= 0:
        return math.sqrt(sum(float(g.pow(2).sum()) for g in (p.grad for p in params) if g is not None))
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
