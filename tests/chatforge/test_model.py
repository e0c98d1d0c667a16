from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from chatforge.model import GPT, GPTConfig, from_depth, masked_cross_entropy, token_budget


def tiny_config(**kw) -> GPTConfig:
    base = dict(vocab_size=97, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, sequence_len=32)
    return GPTConfig(**{**base, **kw})


@pytest.mark.parametrize(
    ("depth", "width", "heads"),
    [(1, 64, 1), (2, 128, 2), (4, 256, 4), (8, 512, 4), (20, 1280, 10), (32, 2048, 16)],
)
def test_depth_scaling_rule(depth, width, heads):
    c = from_depth(depth, 32768)
    assert (c.n_layer, c.n_embd, c.n_head, c.n_kv_head) == (depth, width, heads, heads)
    assert c.head_dim in (64, 128) and c.n_embd % c.head_dim == 0
    assert c.padded_vocab_size % 64 == 0


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_kv_head"):
        tiny_config(n_kv_head=3)
    with pytest.raises(ValueError, match="multiple of n_head"):
        tiny_config(n_embd=65)
    with pytest.raises(ValueError, match="kv_group"):
        GPTConfig.from_depth(2, 100, kv_group=3)


def test_param_count_and_flops_match_a_hand_count():
    # Every dimension differs from the others, so a swapped factor changes the result: 3 layers,
    # width 48, 4 query heads of 12, 2 key/value heads, context 40, vocab 100 padded to 128.
    model = GPT(GPTConfig(vocab_size=100, n_layer=3, n_embd=48, n_head=4, n_kv_head=2, sequence_len=40))
    # One block, its six matrices (no biases, no norm weights):
    #   c_q     48 x (4 heads x 12) = 48 x 48  = 2_304
    #   c_k     48 x (2 heads x 12) = 48 x 24  = 1_152
    #   c_v     48 x 24                        = 1_152
    #   c_proj  48 x 48                        = 2_304
    #   c_fc    48 x 192 (4 x width)           = 9_216
    #   c_proj  192 x 48                       = 9_216
    #   block total                            = 25_344;  3 blocks = 76_032
    # Embedding 128 x 48 = 6_144 and an untied head 48 x 128 = 6_144 (rows padded to 128).
    assert model.num_params() == 76_032 + 6_144 + 6_144 == 88_320
    # Training FLOPs per token, nanochat's convention (its estimate_flops):
    #   6 x matmul weights, the embedding lookup left out: 6 x (76_032 + 6_144) = 6 x 82_176 = 493_056
    #   attention, 12 x layers x heads x head_dim x context:  12 x 3 x 4 x 12 x 40 =      69_120
    assert model.flops_per_token() == 493_056 + 69_120 == 562_176
    assert token_budget(88_320) == 20 * 88_320 == 1_766_400


def test_param_groups_cover_every_parameter_once():
    model = GPT(tiny_config())
    groups = model.param_groups()
    params = [p for g in groups.values() for p in g]
    assert len({id(p) for p in params}) == len(params)
    assert sum(p.numel() for p in params) == model.num_params()
    assert all(p.ndim == 2 for p in groups["matrix"])


def test_no_biases_untied_embeddings_and_softcap():
    model = GPT(tiny_config())
    assert all("bias" not in name for name, _ in model.named_parameters())
    assert model.wte.weight.data_ptr() != model.lm_head.weight.data_ptr()
    with torch.no_grad():
        model.lm_head.weight.fill_(10.0)
    logits = model(torch.randint(0, 97, (2, 8)))
    assert logits.shape == (2, 8, 97)
    assert logits.abs().max() <= model.config.logit_softcap + 1e-4


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    for block in model.blocks:  # make every branch non-trivial (c_proj starts at zero)
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
    x = torch.randint(0, 97, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 97
    a, b = model(x), model(y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-5)
    assert not torch.allclose(a[0, 10:], b[0, 10:], atol=1e-5)


def test_explicit_positions_match_default():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    x = torch.randint(0, 97, (2, 12))
    pos = torch.arange(12).expand(2, 12)
    assert torch.allclose(model(x), model(x, positions=pos), atol=1e-6)


def test_logits_rows_equal_full_logits_indexed():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    for block in model.blocks:  # non-trivial branches, so every position's logits differ
        torch.nn.init.normal_(block.attn.c_proj.weight, std=0.05)
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.05)
    torch.nn.init.normal_(model.lm_head.weight, std=0.5)
    x = torch.randint(0, 97, (2, 12))
    rows = torch.tensor([11, 0, 5, 5])  # any order, repeats allowed
    full = model(x)
    picked = model(x, logits_rows=rows)
    assert picked.shape == (2, 4, 97)
    assert torch.allclose(picked, full[:, rows], atol=1e-6)
    pos = torch.arange(12).expand(2, 12)
    assert torch.allclose(model(x, positions=pos, logits_rows=rows), full[:, rows], atol=1e-6)
    with pytest.raises(ValueError, match="logits_rows"):
        model(x, x, logits_rows=rows)


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    x = torch.randint(0, 97, (4, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = model(x[:, :-1], x[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.0  # about ln(97) = 4.57 at the start
    assert loss.item() < 0.5


def test_masked_loss_is_zero_not_nan_when_all_masked():
    logits = torch.randn(2, 5, 10, requires_grad=True)
    targets = torch.full((2, 5), -1)
    loss = masked_cross_entropy(logits, targets)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    targets[0, 0] = 3
    assert masked_cross_entropy(logits, targets).item() > 0


def test_reference_generate_greedy_and_seeded():
    torch.manual_seed(0)
    model = GPT(tiny_config())
    for block in model.blocks:
        torch.nn.init.normal_(block.mlp.c_proj.weight, std=0.1)
    with torch.no_grad():
        model.lm_head.weight.normal_(std=1.0)
    prompt = [1, 2, 3]
    greedy = list(model.generate(prompt, 10))
    assert len(greedy) == 10
    # greedy: each token is the argmax of a full forward over the context so far
    ctx = list(prompt)
    for t in greedy:
        assert t == int(model(torch.tensor([ctx]))[0, -1].argmax())
        ctx.append(t)
    a = list(model.generate(prompt, 10, temperature=1.0, seed=7))
    b = list(model.generate(prompt, 10, temperature=1.0, seed=7))
    assert a == b
    stop = list(model.generate(prompt, 10, stop_ids=(greedy[2],)))
    assert stop == greedy[: greedy.index(greedy[2]) + 1]
    with pytest.raises(ValueError, match="at least one"):
        list(model.generate([], 3))


def test_softcap_matches_the_plain_expression_and_its_gradient():
    from chatforge.model import softcap

    x = (torch.randn(64, 50, dtype=torch.float64) * 30).requires_grad_()
    y = softcap(x, 15.0)
    assert torch.allclose(y, 15.0 * torch.tanh(x / 15.0))
    assert torch.autograd.gradcheck(lambda t: softcap(t, 15.0), (x[:4, :5].detach().requires_grad_(),))


def test_options_param_count_and_flops_by_hand():
    """3 layers of width 48 as above, plus value embeddings on layers 0 and 2 and windows S, L, L
    of 10 tokens on a 40-token context."""
    plain = GPT(GPTConfig(vocab_size=100, n_layer=3, n_embd=48, n_head=4, n_kv_head=2, sequence_len=40))
    model = GPT(replace(plain.config, value_embeds=True, window_pattern="SL", short_window=10))
    # two value tables of 128 rows x (2 KV heads x 12) = 3_072 each; two gates of 12 x 2 = 24 each
    assert model.num_params() == 88_320 + 2 * 3_072 + 2 * 24
    # the tables are lookups (no FLOPs), the gates matmuls; layer 0's attention covers 10 positions
    attention = 12 * 4 * 12 * (10 + 40 + 40)
    assert model.flops_per_token() == 6 * (76_032 + 6_144 + 2 * 24) + attention
    assert plain.flops_per_token() == 562_176  # unchanged without the options


def test_the_token_budget_leaves_the_value_embedding_tables_out():
    plain = GPT(GPTConfig.from_depth(2, 1000, sequence_len=32))
    with_ve = GPT(GPTConfig.from_depth(2, 1000, sequence_len=32, value_embeds=True))
    assert with_ve.num_params() > plain.num_params() + 1024 * 128  # one 1,024-row table of 128
    # only the gate (12 -> 2 heads) is left of the option in the count the budget uses
    assert with_ve.budget_params() == plain.budget_params() + 12 * 2 == plain.num_params() + 24
