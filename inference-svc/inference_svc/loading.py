"""Load a servable model: a checkpoint by artifact name (or directory) plus the tokenizer it names."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.model import GPT, GPTConfig
from chatforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str  # what the caller asked for: "run/stage[/step_N]" or a directory
    path: Path
    model: GPT
    tokenizer: Tokenizer | None
    meta: dict[str, Any]


def load_model(
    name: str, store: ArtifactStore, *, device: str | torch.device | None = None, tokenizer: str | None = None
) -> LoadedModel:
    """`name` is an artifact name ("run/sft", "run/sft/step_000100") or a checkpoint directory.

    The tokenizer is the one the checkpoint's meta names under "tokenizer" unless `tokenizer` (a
    tokenizer artifact name or a tokenizer.json path) overrides it; None when neither exists.
    On CUDA the weights are cast to bfloat16 (DESIGN.md: the serving dtype); on CPU they stay float32.
    """
    path = Path(name)
    if not (path.is_dir() and (path / checkpoint.META_FILE).is_file()):
        path = store.resolve_checkpoint(name)
    ckpt = checkpoint.load(path, with_optimizer=False)
    config = GPTConfig.from_dict(ckpt.meta["config"])
    model = GPT(config)
    checkpoint.load_state_into(model, ckpt.model_state, source=path)
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    model = model.to(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32).eval()
    tok = _load_tokenizer(tokenizer or ckpt.meta.get("tokenizer"), store)
    if tok is not None and tok.vocab_size != config.vocab_size:
        raise checkpoint.CheckpointError(
            f"tokenizer {tok.name!r} has {tok.vocab_size} ids but checkpoint {path} was trained on {config.vocab_size}"
        )
    log.info("loaded %s (%s, %.1fM parameters) on %s", name, path, model.num_params() / 1e6, dev)
    return LoadedModel(name, path, model, tok, ckpt.meta)


def _load_tokenizer(name: str | None, store: ArtifactStore) -> Tokenizer | None:
    if not name:
        return None
    path = Path(name)
    if path.suffix == ".json" and path.is_file():
        return Tokenizer.load(path)
    return Tokenizer.load(store.find_tokenizer(name))
