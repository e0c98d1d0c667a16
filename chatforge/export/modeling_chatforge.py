"""chatforge's GPT as a `transformers` causal LM (written into every export).

Copied verbatim into the export directory by `chatforge export hf` and loaded by
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`. Self-contained: torch and
`transformers` only, so an export works wherever `transformers` does, without chatforge installed.

It computes what `chatforge.model.GPT.forward` computes, op for op (the export test checks the logits
against chatforge's): token embedding, then RMSNorm without a learnable scale; in each block
pre-norm attention (rotary on the two halves of each head, then QK-norm; grouped-query heads) and a
ReLU² MLP, no biases; a final norm; an untied head whose padded rows are cut off; a tanh softcap on
the logits. The architecture options: sliding-window layers (`window_pattern`, `short_window`) and
value embeddings (`value_embeds`: a gated per-layer token embedding added to the values). Keys and
values go to a `transformers` cache (`DynamicCache`), so `generate()` decodes
one token per step; a 2-D attention mask (left padding in a batch) is honoured. Written for the
`transformers` 5 API (the `cache` argument) and still taking 4.x's `past_key_values`; the export
tests pass on 5.25 and 4.57.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_chatforge import ChatforgeConfig

try:  # newer `transformers`: initialisers that leave weights loaded from the checkpoint alone
    from transformers import initialization as init
except ImportError:
    from torch.nn import init  # type: ignore[no-redef]

VE_GATE_CHANNELS = 12  # the value-embedding gate reads this many leading channels of its input

# The output field that carries the cache: `cache` in newer `transformers`, `past_key_values` before.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def softcap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(logits / cap)


def rotary(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, T, 1, head_dim/2) for integer positions (B, T), computed as chatforge's tables."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq.to(positions.device)
    return angles.cos().unsqueeze(2), angles.sin().unsqueeze(2)


class ChatforgeAttention(nn.Module):
    def __init__(self, config: ChatforgeConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.window = config.layer_windows()[layer]
        self.gate_channels = min(VE_GATE_CHANNELS, config.n_embd)
        has_ve = layer in config.value_embed_layers()
        self.ve_gate = nn.Linear(self.gate_channels, config.n_kv_head, bias=False) if has_ve else None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
        ve: torch.Tensor | None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)
        if ve is not None and self.ve_gate is not None:  # the value embedding, gated in (0, 3) per head
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., : self.gate_channels]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer)
        if self.n_kv_head != self.n_head:  # each key/value head serves a group of adjacent query heads
            group = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if mask is None:  # no cache, no padding, no window: plain causal attention, as in training
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class ChatforgeMLP(nn.Module):
    def __init__(self, config: ChatforgeConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class ChatforgeBlock(nn.Module):
    def __init__(self, config: ChatforgeConfig, layer: int):
        super().__init__()
        self.attn = ChatforgeAttention(config, layer)
        self.mlp = ChatforgeMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: Cache | None,
        ve: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(norm(x), cos, sin, mask, cache, ve)
        return x + self.mlp(norm(x))


class ChatforgePreTrainedModel(PreTrainedModel):
    config_class = ChatforgeConfig
    base_model_prefix = "model"
    _no_split_modules = ["ChatforgeBlock"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """chatforge's initialisation (used only for weights a checkpoint does not hold)."""
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=1.0)
        elif isinstance(module, nn.Linear):
            bound = (3.0 / module.in_features) ** 0.5
            init.uniform_(module.weight, -bound, bound)


class ChatforgeModel(ChatforgePreTrainedModel):
    """The body: embeddings and blocks; returns the final normalised hidden states."""

    def __init__(self, config: ChatforgeConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(ChatforgeBlock(config, i) for i in range(config.n_layer))
        self.windows = config.layer_windows()
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(config.padded_vocab_size, kv_dim) for i in config.value_embed_layers()}
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.wte = value  # type: ignore[assignment]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        if not use_cache:
            cache = None
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        positions: torch.Tensor | None = position_ids
        if positions is None:
            positions = torch.arange(past, past + T, device=x.device).unsqueeze(0).expand(B, T)
        x = norm(x)
        cos, sin = rotary(positions, self.config.head_dim, self.config.rope_base)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        if len(self.value_embeds) and input_ids is None:
            raise ValueError("this model has value embeddings, which need input_ids, not inputs_embeds")
        masks: dict[int | None, torch.Tensor | None] = {}  # one per window size
        for i, block in enumerate(self.blocks):
            window = self.windows[i]
            if window not in masks:
                masks[window] = _attention_mask(attention_mask, B, T, past, window, x.device)
            ve = self.value_embeds[str(i)](input_ids).to(x.dtype) if str(i) in self.value_embeds else None
            x = block(x, cos, sin, masks[window], cache, ve)
        with_cache: dict[str, Any] = {_CACHE_FIELD: cache}
        return BaseModelOutputWithPast(last_hidden_state=norm(x), **with_cache)


class ChatforgeForCausalLM(ChatforgePreTrainedModel, GenerationMixin):
    def __init__(self, config: ChatforgeConfig):
        super().__init__(config)
        self.model = ChatforgeModel(config)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.wte

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.wte = value  # type: ignore[assignment]

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value  # type: ignore[assignment]

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
        )
        hidden = out.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
        else:
            hidden = hidden[:, logits_to_keep]
        vocab = self.config.vocab_size
        logits = softcap(self.lm_head(hidden)[..., :vocab].float(), self.config.logit_softcap)
        loss = None
        if labels is not None:  # next-token loss; label -100 is ignored (the transformers convention)
            shifted = labels[:, 1:].to(logits.device)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), shifted.reshape(-1), ignore_index=-100)
        with_cache: dict[str, Any] = {_CACHE_FIELD: getattr(out, _CACHE_FIELD)}
        return CausalLMOutputWithPast(loss=loss, logits=logits, **with_cache)


def _attention_mask(
    padding: torch.Tensor | None, batch: int, length: int, past: int, window: int | None, device: torch.device
) -> torch.Tensor | None:
    """A boolean (B, 1, T, past + T) mask: causal over the cache's positions, within `window`
    positions back when the layer has one, padding keys hidden.

    None when plain causal attention is exact (no cached keys, no padding, no window shorter than
    the input), so that prompt processing runs the very kernel training runs.
    """
    if padding is not None and padding.dim() != 2:
        raise ValueError("attention_mask must be 2-D (batch, keys): 1 for tokens, 0 for padding")
    no_padding = padding is None or bool(padding.all())
    if past == 0 and no_padding and (window is None or window >= length):
        return None
    keys = torch.arange(past + length, device=device)
    queries = torch.arange(past, past + length, device=device)
    back = queries[:, None] - keys[None, :]
    allowed = back >= 0
    if window is not None:
        allowed = allowed & (back < window)
    allowed = allowed.expand(batch, 1, length, past + length)
    if padding is not None:
        allowed = allowed & padding[:, None, None, -(past + length) :].to(device=device, dtype=torch.bool)
    # A padding query sees no key at all; let it see every key instead of producing NaN (its output
    # is never used).
    return allowed | ~allowed.any(dim=-1, keepdim=True)
