"""The engine's configuration: one typed object, validated when built, units in the names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AttentionChoice = Literal["auto", "portable", "flex"]


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16  # tokens per KV block (vLLM's default: small waste, cheap tables)
    # The KV pool is sized by the first of these that is set: a block count, a byte budget, or a
    # fraction of free device memory (CUDA only; on CPU the byte budget's default applies).
    num_blocks: int | None = None
    kv_cache_bytes: int | None = None
    kv_cache_memory_fraction: float = 0.5
    default_kv_cache_bytes: int = 256 * 2**20  # CPU default when neither count nor bytes is given
    max_num_batched_tokens: int = 512  # tokens per step (decodes + prefill chunks)
    max_num_seqs: int = 64  # sequences running at once
    max_model_len: int | None = None  # prompt + output tokens; defaults to the model's sequence_len
    enable_prefix_caching: bool = True
    attention: AttentionChoice = "auto"  # auto: FlexAttention on CUDA when it works, else portable
    tool_workers: int = 4  # threads running tool calls while other sequences keep decoding
    tool_timeout_s: float = 10.0
    stuck_after_s: float = 30.0  # health check fails when a step with work takes longer than this

    def __post_init__(self) -> None:
        problems = []
        if self.block_size < 1:
            problems.append(f"block_size must be >= 1, got {self.block_size}")
        if self.num_blocks is not None and self.num_blocks < 1:
            problems.append(f"num_blocks must be >= 1, got {self.num_blocks}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            problems.append(f"kv_cache_bytes must be >= 1, got {self.kv_cache_bytes}")
        if not 0 < self.kv_cache_memory_fraction <= 1:
            problems.append(
                f"kv_cache_memory_fraction must be in (0, 1], got {self.kv_cache_memory_fraction}"
            )
        if self.max_num_batched_tokens < 1:
            problems.append(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            problems.append(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_model_len is not None and self.max_model_len < 2:
            problems.append(f"max_model_len must be >= 2, got {self.max_model_len}")
        if self.attention not in ("auto", "portable", "flex"):
            problems.append(f"attention must be 'auto', 'portable' or 'flex', got {self.attention!r}")
        if self.tool_workers < 1:
            problems.append(f"tool_workers must be >= 1, got {self.tool_workers}")
        if problems:
            raise ValueError("invalid EngineConfig: " + "; ".join(problems))
