"""Loading the real datasets from the Hugging Face hub, and knowing when not to try.

`datasets` is imported only when a hub loader runs, so the offline path (the default on machines
without the hub) never imports it and never opens a connection.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

# load(path, name=None, *, split=...) -> a dataset of row mappings; `datasets.load_dataset` by default
HubLoad = Callable[..., Sequence[Any]]

OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
SPLITS = ("train", "val")


class HubUnavailable(RuntimeError):
    """The hub was asked for but cannot be used (offline mode, no network, or no `datasets`)."""


def hub_disabled() -> str | None:
    """The environment variable that puts the hub offline, if one does."""
    for var in OFFLINE_ENV:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


def load_rows(load: HubLoad | None, path: str, config: str | None, split: str) -> Sequence[Any]:
    """Load one split of a hub dataset, refusing when the environment says the hub is offline."""
    var = hub_disabled()
    if var is not None:
        raise HubUnavailable(f"{var} is set, so {path} cannot be loaded from the hub; use source='offline'")
    if load is None:
        try:
            from datasets import load_dataset
        except ImportError as e:
            raise HubUnavailable("the hub loaders need `datasets`: pip install 'chatforge[train]'") from e
        load = load_dataset
    return load(path, config, split=split)
