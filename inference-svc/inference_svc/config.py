"""The engine's configuration: one typed object, validated when built, units in the names.

Part of the inference service's `Settings` (`inference_svc.settings`, field `engine`), so the
CLI, the Serve application and a test build it the same way, and a bad value names its field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AttentionChoice = Literal["auto", "portable", "flex"]


class EngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    block_size: int = Field(16, ge=1)  # tokens per KV block (vLLM's default: small waste, cheap tables)
    # The KV pool is sized by the first of these that is set: a block count, a byte budget, or a
    # fraction of free device memory (CUDA only; on CPU the byte budget's default applies).
    num_blocks: int | None = Field(None, ge=1)
    kv_cache_bytes: int | None = Field(None, ge=1)
    kv_cache_memory_fraction: float = Field(0.5, gt=0, le=1)
    default_kv_cache_bytes: int = Field(256 * 2**20, ge=1)  # CPU, when neither count nor bytes is given
    max_num_batched_tokens: int = Field(512, ge=1)  # tokens per step (decodes + prefill chunks)
    max_num_seqs: int = Field(64, ge=1)  # sequences running at once
    max_model_len: int | None = Field(None, ge=2)  # prompt + output; defaults to the model's sequence_len
    enable_prefix_caching: bool = True
    attention: AttentionChoice = "auto"  # auto: FlexAttention on CUDA when it works, else portable
    tool_workers: int = Field(4, ge=1)  # threads running tool calls while other sequences keep decoding
    tool_timeout_s: float = Field(10.0, gt=0)
    stuck_after_s: float = Field(30.0, gt=0)  # health check fails when a step with work takes longer
