"""The GPT: one model for training, evaluation and serving.

nanochat's design: rotary position embeddings, QK-norm, parameter-free RMSNorm (pre-norm, plus one
after the embedding and one before the head), a ReLU² MLP, no biases, untied input and output
embeddings, a tanh softcap on the logits and grouped-query attention.

The same `GPT.forward` serves every caller. Training passes `(B, T)` ids and targets. The inference
engine passes explicit `positions` and an `attention` object (`AttentionBackend`) that owns the KV
cache: each layer hands it the new queries, keys and values after rotary and QK-norm, and gets the
attention output back. So the paged cache lives in the engine, not here, and there is no second copy
of the model anywhere.

Float32 on CPU; on CUDA the caller runs under `torch.autocast(dtype=torch.bfloat16)` (weights stay
float32 for the optimizer) or casts the model to bfloat16 for serving.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatforge.contracts.training import window_pattern_problem

# --- the scaling rule ---------------------------------------------------------------------------
# One knob, depth, sets the rest (nanochat's rule, which its speedruns use from d4 to d32):
ASPECT_RATIO = 64  # width = 64 * depth: d20 -> 1280 wide, d32 -> 2048
MAX_HEAD_DIM = 128  # head size 128 from d8 up (width >= 512) ...
TINY_HEAD_DIM = 64  # ... and 64 below, so a d2 model still has two heads instead of one
TOKENS_PER_PARAM = 20  # Chinchilla's compute-optimal ratio (Hoffmann et al., 2022)
VOCAB_MULTIPLE = 64  # the embedding and head are padded to a multiple of 64 rows: faster matmuls
DEFAULT_SEQUENCE_LEN = 2048
SHORT_WINDOW_FRACTION = 4  # an "S" layer sees a quarter of the context (nanochat's short window)
VE_GATE_CHANNELS = 12  # the value-embedding gate reads this many leading channels of its input


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int  # ids the tokenizer produces (specials included)
    n_layer: int = 12
    n_embd: int = 768
    n_head: int = 6
    n_kv_head: int = 6  # < n_head: grouped-query attention, each key/value head shared by a group
    sequence_len: int = DEFAULT_SEQUENCE_LEN
    logit_softcap: float = 15.0  # logits = c * tanh(logits / c); keeps early training stable
    rope_base: float = 10_000.0
    vocab_multiple: int = VOCAB_MULTIPLE
    # Sliding-window attention: the pattern is tiled over the layers, "L" a layer that sees the
    # whole context, "S" one that sees only the last `short_window` positions (itself included);
    # the last layer always sees the whole context. "L" = plain causal attention everywhere.
    window_pattern: str = "L"
    short_window: int = 0  # tokens an "S" layer sees; 0 = sequence_len / SHORT_WINDOW_FRACTION,
    # fixed when the config is built and saved as a number, so a later stage that trains at another
    # context length (loading.load_model's `sequence_len`) keeps the windows the model learnt; it
    # stays 0 when no layer is short.
    # Value embeddings (ResFormer-style, as nanochat): alternate layers, the last one included, get
    # a token embedding of their own added to the attention values, scaled per key/value head by a
    # gate in (0, 3) computed from the layer's input.
    value_embeds: bool = False

    def __post_init__(self) -> None:
        if self.short_window == 0 and self.sequence_len >= 1 and "S" in self.window_pattern.upper():
            short = max(1, -(-self.sequence_len // SHORT_WINDOW_FRACTION))
            object.__setattr__(self, "short_window", short)
        problems = []
        if self.vocab_size < 1:
            problems.append(f"vocab_size must be >= 1, got {self.vocab_size}")
        if self.n_layer < 1:
            problems.append(f"n_layer must be >= 1, got {self.n_layer}")
        if self.n_head < 1 or self.n_embd % max(self.n_head, 1):
            problems.append(f"n_embd ({self.n_embd}) must be a positive multiple of n_head ({self.n_head})")
        elif self.head_dim % 2:
            problems.append(f"head size n_embd/n_head = {self.head_dim} must be even for rotary embeddings")
        if self.n_kv_head < 1 or self.n_head % max(self.n_kv_head, 1):
            problems.append(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({self.n_kv_head})")
        if self.sequence_len < 1:
            problems.append(f"sequence_len must be >= 1, got {self.sequence_len}")
        if window_pattern_problem(self.window_pattern):
            problems.append(window_pattern_problem(self.window_pattern))
        if self.short_window < 0:
            problems.append(f"short_window must be >= 0, got {self.short_window}")
        if problems:
            raise ValueError("invalid GPTConfig: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    def layer_windows(self) -> list[int | None]:
        """Per layer, how many positions (itself included) a query sees; None = the whole context."""
        pattern = self.window_pattern.upper()
        windows: list[int | None] = [
            self.short_window if pattern[i % len(pattern)] == "S" else None for i in range(self.n_layer)
        ]
        windows[-1] = None
        return windows

    def value_embed_layers(self) -> list[int]:
        """The layers with a value embedding: every other one, counting back from the last."""
        if not self.value_embeds:
            return []
        return [i for i in range(self.n_layer) if i % 2 == (self.n_layer - 1) % 2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_depth(
        cls,
        depth: int,
        vocab_size: int,
        *,
        sequence_len: int = DEFAULT_SEQUENCE_LEN,
        kv_group: int = 1,
        window_pattern: str = "L",
        value_embeds: bool = False,
    ) -> GPTConfig:
        """The scaling rule: width = 64·depth rounded up to the head size; head size 128 (64 when
        the width is under 512); one query head per head size of width; `kv_group` query heads
        share each key/value head (1 = plain multi-head attention). The architecture options
        pass through unchanged."""
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        width = ASPECT_RATIO * depth
        head_dim = MAX_HEAD_DIM if width >= 8 * ASPECT_RATIO else TINY_HEAD_DIM
        width = max(head_dim, (width + head_dim - 1) // head_dim * head_dim)
        n_head = width // head_dim
        if kv_group < 1 or n_head % kv_group:
            raise ValueError(f"kv_group {kv_group} must divide the {n_head} heads of a depth-{depth} model")
        return cls(
            vocab_size=vocab_size,
            n_layer=depth,
            n_embd=width,
            n_head=n_head,
            n_kv_head=n_head // kv_group,
            sequence_len=sequence_len,
            window_pattern=window_pattern,
            value_embeds=value_embeds,
        )


def from_depth(depth: int, vocab_size: int, **kwargs: Any) -> GPTConfig:
    """Shorthand for `GPTConfig.from_depth` (see there for the rule)."""
    return GPTConfig.from_depth(depth, vocab_size, **kwargs)


def token_budget(n_params: int, ratio: float = TOKENS_PER_PARAM) -> int:
    """Training tokens for a model of `n_params` parameters: ratio × parameters (20 = Chinchilla)."""
    return int(ratio * n_params)


# --- the attention seam used by the inference engine ----------------------------------------------


class AttentionBackend(Protocol):
    """Owns the KV cache during inference: stores the new keys/values of `layer` and attends.

    q: (B, T, n_head, head_dim); k, v: (B, T, n_kv_head, head_dim); returns (B, T, n_head, head_dim).
    `window`: a query at position p sees keys at positions p - window + 1 .. p; None = all up to p.
    """

    def attend(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int | None
    ) -> torch.Tensor: ...


def norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm with no learnable scale (nanochat: the gain adds parameters and nothing measurable)."""
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of the head dimension; x: (B, T, H, D)."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention over (B, T, H, D) tensors, key/value heads repeated for GQA; `mask` (T, T),
    True where a query may attend, replaces the causal mask (a sliding window's)."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    gqa = k.size(1) != q.size(1)
    if mask is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    else:
        if gqa:  # SDPA's GQA runs on its flash and math kernels only, and flash takes no mask: the
            # math kernel would hold (batch, heads, T, T) scores; repeated heads keep the
            # memory-efficient kernel (each key/value head serves n_head / n_kv_head query heads)
            k, v = (t.repeat_interleave(q.size(1) // t.size(1), dim=1) for t in (k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return y.transpose(1, 2)


def window_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """(Q, K) booleans: key at or before the query and, with a window, fewer than `window` back."""
    diff = query_pos.view(-1, 1) - key_pos.view(1, -1)
    ok = diff >= 0
    return ok & (diff < window) if window is not None else ok


class CausalSelfAttention(nn.Module):
    ve_gate: nn.Linear | None

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.window = config.layer_windows()[layer]
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        has_ve = layer in config.value_embed_layers()
        self.gate_channels = min(VE_GATE_CHANNELS, config.n_embd)
        self.ve_gate = nn.Linear(self.gate_channels, config.n_kv_head, bias=False) if has_ve else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention: AttentionBackend | None,
        ve: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None and self.ve_gate is not None:
            # the gate starts near 1.5 (small positive weights) and stays in (0, 3)
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., : self.gate_channels]))  # (B, T, n_kv_head)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        # QK-norm after rotary: bounds the attention logits, which lets the model train at higher
        # learning rates without the logit growth that destabilises small GPTs.
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        if attention is None:
            y = causal_attention(q, k, v, mask)
        else:
            y = attention.attend(self.layer, q, k, v, window=self.window)
        return self.c_proj(y.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU² (Primer, So et al. 2021)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attention: AttentionBackend | None,
        ve: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(norm(x), cos, sin, attention, ve, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    # Declared for type checkers: nn.Module's attribute lookup is typed `Tensor | Module`.
    wte: nn.Embedding
    blocks: nn.ModuleList
    value_embeds: nn.ModuleDict
    lm_head: nn.Linear
    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(config.padded_vocab_size, kv_dim) for i in config.value_embed_layers()}
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        # Rotary tables for 10x the training context, so generation can run past it without
        # recomputing them (quality past the trained length is another matter).
        cos, sin = _rotary_tables(10 * config.sequence_len, config.head_dim, config.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nanochat's init: unit-variance embeddings, a near-zero head (uniform first predictions),
        zero output projections (every block starts as the identity), 1/sqrt(fan_in) elsewhere;
        value embeddings like the value projection, their gates small and positive."""
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.typed_blocks():
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                bound = math.sqrt(3.0 / lin.in_features)  # uniform with std 1/sqrt(fan_in)
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)
        bound = math.sqrt(3.0 / self.config.n_embd)
        for table in self.value_embeds.values():
            nn.init.uniform_(cast(nn.Embedding, table).weight, -bound, bound)
        cos, sin = _rotary_tables(self.cos.size(0), self.config.head_dim, self.config.rope_base)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    # --- forward -----------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        positions: torch.Tensor | None = None,
        attention: AttentionBackend | None = None,
        loss_reduction: str = "mean",
        logits_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) or, with `targets`, the cross-entropy loss.

        Targets equal to -1 are ignored. `loss_reduction="mean"` averages over the counted targets
        and is 0 (not NaN) when every target is masked; "sum" and "none" are for evaluation.
        `positions` (B, T) default to 0..T-1; an `attention` backend replaces causal attention.
        `logits_rows` (R,) picks the positions whose logits are wanted, before the head: logits
        (B, R, vocab). The inference engine samples from one position per sequence of a step, and
        a prefill chunk of 1,000 tokens would otherwise pay a 1,000 x vocab matmul (as much as the
        body of a small model) for logits nobody reads.
        """
        if logits_rows is not None and targets is not None:
            raise ValueError("logits_rows selects logits to return; it cannot be combined with targets")
        B, T = idx.shape
        if positions is None:
            if T > self.cos.size(0):
                raise ValueError(f"sequence of {T} tokens exceeds the rotary table ({self.cos.size(0)})")
            cos, sin = self.cos[:T].view(1, T, 1, -1), self.sin[:T].view(1, T, 1, -1)
        else:
            cos, sin = self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)
        x = norm(self.wte(idx))
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        masks: dict[int, torch.Tensor] = {}  # the training path's sliding-window masks, one per size
        for i, block in enumerate(self.typed_blocks()):
            ve = self.value_embeds[str(i)](idx).to(x.dtype) if str(i) in self.value_embeds else None
            window, mask = block.attn.window, None
            if attention is None and window is not None and window < T:
                if window not in masks:
                    pos = torch.arange(T, device=idx.device)
                    masks[window] = window_mask(pos, pos, window)
                mask = masks[window]
            x = block(x, cos, sin, attention, ve, mask)
        if logits_rows is not None:
            x = x.index_select(1, logits_rows)
        logits = softcap(
            self.lm_head(norm(x))[..., : self.config.vocab_size].float(), self.config.logit_softcap
        )
        if targets is None:
            return logits
        return masked_cross_entropy(logits, targets, reduction=loss_reduction)

    def typed_blocks(self) -> list[Block]:
        return [cast(Block, block) for block in self.blocks]

    # --- accounting --------------------------------------------------------------------------
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def budget_params(self) -> int:
        """The parameters the token budget counts: all but the value-embedding tables, which at d12
        would outnumber the rest (a lookup per layer, no FLOPs), so turning them on does not change
        how long a run trains (nanochat's budget leaves them out too)."""
        return self.num_params() - sum(p.numel() for p in self.value_embeds.parameters())

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward): 6 per matmul weight, plus attention.

        The attention term is 12·heads·head_dim·context per layer (QKᵀ and AV, forward and
        backward), as in the PaLM paper's appendix B; the context is the layer's window where it
        is shorter than the sequence (the kernel still computes the masked scores today; this
        counts the useful work). The input and value embeddings are lookups, not matmuls, so their
        parameters are left out.
        """
        c = self.config
        lookups = self.wte.weight.numel() + sum(p.numel() for p in self.value_embeds.parameters())
        matmul_params = self.num_params() - lookups
        contexts = [min(w, c.sequence_len) if w else c.sequence_len for w in c.layer_windows()]
        return 6 * matmul_params + 12 * c.n_head * c.head_dim * sum(contexts)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimizer: the 2-D block matrices (the value-embedding gates included, as
        nanochat) go to Muon, the rest to AdamW; "value_embeds" is empty unless the option is on."""
        return {
            "matrix": [p for p in self.blocks.parameters()],
            "embedding": [cast(nn.Parameter, self.wte.weight)],
            "value_embeds": [p for p in self.value_embeds.parameters()],
            "lm_head": [cast(nn.Parameter, self.lm_head.weight)],
        }

    # --- reference generation ----------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        ids: list[int],
        max_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int | None = None,
        seed: int | None = None,
        stop_ids: tuple[int, ...] = (),
    ) -> Iterator[int]:
        """Yield new token ids, recomputing the whole context each step: slow, simple, the oracle.

        temperature 0 is greedy (argmax); otherwise softmax sampling, optionally over the top k.
        The context is cropped to the last `sequence_len` tokens. Stops after a token in `stop_ids`.
        """
        if not ids:
            raise ValueError("generate needs at least one prompt token")
        device = self.wte.weight.device
        generator = torch.Generator(device=device)
        if seed is not None:
            generator.manual_seed(seed)
        context = list(ids)
        for _ in range(max_tokens):
            window = torch.tensor([context[-self.config.sequence_len :]], device=device)
            logits = self(window)[0, -1]
            token = sample_next(logits, temperature=temperature, top_k=top_k, generator=generator)
            yield token
            if token in stop_ids:
                return
            context.append(token)


class _SoftCap(torch.autograd.Function):
    """cap·tanh(x/cap) with one buffer each way: it runs over (tokens × vocab) logits, where the
    plain expression's temporaries made it ~30% of a small CPU model's step (profiled in
    bench/train_throughput.py). tanh is computed as 2·sigmoid(2z) - 1: PyTorch's CPU sigmoid is
    vectorised and measured 3x faster than its tanh over (1024 x 4096) logits; the two agree to
    float32 rounding (~4e-6 at cap 15)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, cap: float) -> torch.Tensor:
        y = torch.sigmoid(torch.mul(x, 2.0 / cap)).mul_(2.0 * cap).sub_(cap)
        ctx.save_for_backward(y)
        ctx.cap = cap
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        # d/dx cap·tanh(x/cap) = 1 - tanh² = 1 - (y/cap)²
        return torch.mul(y, y).mul_(-1.0 / ctx.cap**2).add_(1.0).mul_(grad), None


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """Squash logits smoothly into (-cap, cap) (Gemma 2's logit softcap; nanochat uses cap 15)."""
    return _SoftCap.apply(logits, cap)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """One token from a (vocab,) logits vector: argmax at temperature 0, else (top-k) sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def masked_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, *, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy that ignores targets of -1; a mean over zero counted targets is 0, not NaN."""
    flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
    losses = F.cross_entropy(flat_logits, flat_targets, ignore_index=-1, reduction="none")
    if reduction == "none":
        return losses.view(targets.shape)
    total = losses.sum()
    if reduction == "sum":
        return total
    if reduction != "mean":
        raise ValueError(f"loss_reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return total / (flat_targets != -1).sum().clamp(min=1)


def _rotary_tables(length: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA (the Hopper path), float32 on CPU where bf16 matmuls are slow."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32
