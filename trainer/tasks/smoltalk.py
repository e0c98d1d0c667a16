"""SmolTalk (HuggingFaceTB/smol-smoltalk): general multi-turn chats.

A row is `{"messages": [{"role": ..., "content": ...}, ...]}`, optionally starting with a system
message, which is exactly the schema `parse_conversation` accepts. Its `test` split is not a
benchmark, so it serves as the validation set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatforge.chat import Conversation, parse_conversation

from .base import RowTask
from .hub import HubLoad, check_split, load_rows

HUB_PATH = "HuggingFaceTB/smol-smoltalk"
HUB_CONFIG = None
HUB_SPLITS = {"train": "train", "val": "test"}


def smoltalk_conversation(row: Mapping[str, Any]) -> Conversation:
    """Convert a `{"messages": [...]}` row; a malformed row raises ConversationError."""
    return parse_conversation({"messages": row["messages"]})


def load_smoltalk(split: str = "train", *, load: HubLoad | None = None, limit: int | None = None) -> RowTask:
    """smol-smoltalk from the hub (its test split for `split="val"`)."""
    rows = load_rows(load, HUB_PATH, HUB_CONFIG, HUB_SPLITS[check_split(split)])
    return RowTask("smoltalk", rows, smoltalk_conversation, limit=limit)
