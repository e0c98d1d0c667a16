"""The training stages: what data each one trains on (the loop itself is shared, `trainer.loop`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chatforge.contracts.training import TrainConfig
from chatforge.tokenizer import Tokenizer

from ..data import Source


@dataclass
class StageData:
    """A stage's training and validation sources, how rows are packed, and prompts to sample."""

    train: Source
    val: Source
    packer: str  # "best_fit" or "padded" (trainer.data.PACKERS)
    approx_tokens: int  # tokens in one pass over train: the default length of mid and sft
    sample_prompts: list[list[int]] = field(default_factory=list)


def stage_data(cfg: TrainConfig, tokenizer: Tokenizer) -> StageData:
    """The data of `cfg.stage`."""
    from . import base, mid, sft

    makers = {"base": base.data, "mid": mid.data, "sft": sft.data}
    return makers[cfg.stage](cfg, tokenizer)
