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


def test_value_embeddings_go_to_adamw_at_half_the_embedding_lr_and_their_gates_to_muon():
    model = GPT(GPTConfig.from_depth(3, 300, sequence_len=16, value_embeds=True, window_pattern="SL"))
    adam, muon = build_optimizers(model, OptimConfig())
    ids = [id(p) for opt in (adam, muon) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter, once
    tables = {id(p) for p in model.value_embeds.parameters()}
    assert len(tables) == 2  # layers 0 and 2
    (ve_group,) = [g for g in adam.param_groups if {id(p) for p in g["params"]} == tables]
    embedding_group = adam.param_groups[0]
    assert ve_group["base_lr"] == pytest.approx(0.5 * embedding_group["base_lr"])
    gates = {id(b.attn.ve_gate.weight) for b in model.typed_blocks() if b.attn.ve_gate is not None}
    assert len(gates) == 2 and gates <= {id(p) for g in muon.param_groups for p in g["params"]}
    # without the option the AdamW groups are the two a saved optimizer state expects
    adam, _ = build_optimizers(GPT(GPTConfig.from_depth(2, 300, sequence_len=16)), OptimConfig())
    assert len(adam.param_groups) == 2
