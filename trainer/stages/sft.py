"""Supervised finetuning: a short pass over a cleaner mixture, one conversation per row.

Each conversation sits alone in its row (padded, padding masked), as at inference time, where a
conversation never shares its context with another.
"""

from __future__ import annotations

from chatforge.contracts.training import TrainConfig
from chatforge.tokenizer import Tokenizer

from . import StageData
from .mid import conversation_data


def data(cfg: TrainConfig, tokenizer: Tokenizer) -> StageData:
    return conversation_data(cfg, tokenizer, packer="padded", unit_size=cfg.device_batch_rows)
