"""Midtraining: the base model learns the chat format, multiple choice and the python tool.

Conversations are packed into full rows like pretraining documents (best fit), with the chat
format's loss mask: only what the assistant writes is trained on.
"""

from __future__ import annotations

from chatforge.chat import Conversation, message, render_for_completion
from chatforge.contracts.training import TrainConfig
from chatforge.tokenizer import Tokenizer

from ..data import ConversationSource
from ..identity import load_identity
from ..tasks.mixtures import mixture
from . import StageData

SAMPLE_QUESTIONS = (
    "What is your name?",
    "What is the capital of France?",
    "How many meters are in 3 kilometers?",
)


def data(cfg: TrainConfig, tokenizer: Tokenizer) -> StageData:
    return conversation_data(cfg, tokenizer, packer="best_fit", unit_size=cfg.unit_conversations)


def conversation_data(cfg: TrainConfig, tokenizer: Tokenizer, *, packer: str, unit_size: int) -> StageData:
    """Train and val mixtures of `cfg.stage`, as sources of rendered conversations."""
    row_len = cfg.sequence_len + 1
    identity = load_identity(cfg.identity)

    def source(split: str) -> ConversationSource:
        mix = mixture(
            cfg.stage, split, source=cfg.task_source, rows=cfg.task_rows, seed=cfg.seed, identity=identity
        )
        return ConversationSource(mix, tokenizer, unit_size=unit_size, max_tokens=row_len)

    train = source("train")
    # one pass: padded rows cost a full row per conversation; packed rows cost about their length
    n = len(train.conversations)
    if packer == "padded":
        approx = n * cfg.sequence_len
    else:
        sample = train.unit(0)
        approx = n * sum(len(d.ids) for d in sample) // max(len(sample), 1)
    prompts = [
        render_for_completion(tokenizer, Conversation((message("user", q),))) for q in SAMPLE_QUESTIONS
    ]
    return StageData(
        train=train, val=source("val"), packer=packer, approx_tokens=approx, sample_prompts=prompts
    )
