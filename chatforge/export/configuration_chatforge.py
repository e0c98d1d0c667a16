"""The `transformers` configuration of an exported chatforge GPT (written into every export).

Copied verbatim into the export directory by `chatforge export hf` and loaded by `AutoConfig` with
`trust_remote_code=True`; it imports only `transformers`. The fields carry `chatforge.model.GPTConfig`'s
names and meaning (docs/contracts.md, "Exports"); the usual `transformers` names (`hidden_size`,
`num_hidden_layers`, ...) are aliases of them.
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class ChatforgeConfig(PretrainedConfig):
    model_type = "chatforge"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
        "num_key_value_heads": "n_kv_head",
        "max_position_embeddings": "sequence_len",
    }

    def __init__(
        self,
        vocab_size: int = 65536,
        n_layer: int = 12,
        n_embd: int = 768,
        n_head: int = 6,
        n_kv_head: int = 6,
        sequence_len: int = 2048,
        logit_softcap: float = 15.0,
        rope_base: float = 10_000.0,
        vocab_multiple: int = 64,
        window_pattern: str = "L",
        short_window: int = 0,
        value_embeds: bool = False,
        use_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_embd = n_embd
        self.n_head = n_head
        self.n_kv_head = n_kv_head
        self.sequence_len = sequence_len
        self.logit_softcap = logit_softcap
        self.rope_base = rope_base
        self.vocab_multiple = vocab_multiple
        # Sliding windows: `window_pattern` tiled over the layers, "L" sees the whole context, "S"
        # the last `short_window` positions (itself included); the last layer always sees all.
        self.window_pattern = window_pattern
        # (0 with an "S" in the pattern: a quarter of the context, as chatforge fills it in; an
        # export always holds the number, and 0 when no layer is short)
        if short_window == 0 and "S" in window_pattern.upper():
            short_window = max(1, -(-sequence_len // 4))
        self.short_window = short_window
        # Value embeddings: every other layer counting back from the last adds a gated token
        # embedding of its own to the attention values.
        self.value_embeds = value_embeds
        self.use_cache = use_cache
        # The output head is its own matrix, not the input embedding transposed.
        kwargs["tie_word_embeddings"] = False
        super().__init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

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

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m
