"""Muon's orthogonalisation, the optimizer split and the LR schedule (trainer.optim)."""

from __future__ import annotations

import pytest
import torch

from chatforge.contracts.training import OptimConfig
from chatforge.model import GPT, GPTConfig
from trainer.optim import Muon, build_optimizers, lr_multiplier, muon_momentum, orthogonalize


@pytest.mark.parametrize("shape", [(32, 32), (64, 16), (16, 64)])
def test_orthogonalize_pushes_singular_values_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x = orthogonalize(g)
    assert x.shape == g.shape
    s = torch.linalg.svdvals(x)
    assert 0.5 < float(s.min()) and float(s.max()) < 1.3  # Newton-Schulz lands in ~[0.7, 1.2]
    # same singular vectors: the update points the way the gradient does
    assert float((x * g).sum()) > 0


def test_muon_rejects_non_matrix_parameters():
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))], lr=0.1)


def test_optimizers_cover_every_parameter_once():
    model = GPT(GPTConfig.from_depth(2, 300, sequence_len=16))
    adam, muon = build_optimizers(model, OptimConfig())
    ids = [id(p) for opt in (adam, muon) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])


def test_schedule_warmup_constant_warmdown():
    cfg = OptimConfig(warmup_ratio=0.1, warmdown_ratio=0.2, final_lr_frac=0.1)
    mults = [lr_multiplier(s, 100, cfg) for s in range(100)]
    assert mults[0] == pytest.approx(0.1) and mults[9] == pytest.approx(1.0)
    assert all(m == 1.0 for m in mults[10:80])
    assert all(a >= b for a, b in zip(mults[80:], mults[81:], strict=False))
    assert mults[99] == pytest.approx(0.1 + 0.9 * 0.05)  # one step before the end of the ramp to 0.1
    assert muon_momentum(0, cfg) == cfg.muon_momentum_start
    assert muon_momentum(10_000, cfg) == cfg.muon_momentum
