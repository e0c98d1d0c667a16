"""Checkpoint to model: the one loader every caller uses (training, RL, evaluation, serving, chat).

    load_model("run/sft")                          latest step of a stage, by artifact name
    load_model("run/sft/step_000100")              one step
    load_model("/path/to/step_000100")             a checkpoint directory

gives the GPT, the tokenizer the checkpoint names (checked against the model's vocabulary: a
mismatched pair loads fine and then speaks garbage) and the checkpoint's metadata; with
`with_optimizer=True` also the optimizer state a resumed run restores (`restore_optimizers`).

One device and dtype policy: the device asked for, else CUDA when present, else the CPU. Weights are
float32, except `serving=True` on CUDA: bfloat16, the dtype the inference engine runs in. Training
keeps float32 weights for the optimizer and runs its forward under autocast (`chatforge.model`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore
from chatforge.model import GPT, GPTConfig, default_device
from chatforge.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str  # what the caller asked for: "run/stage[/step_N]" or a directory
    path: Path  # the checkpoint directory it resolved to
    model: GPT  # on its device, in eval mode
    tokenizer: Tokenizer | None  # None only when the checkpoint names none and none was required
    meta: dict[str, Any]  # the checkpoint's meta.json
    optimizer_state: Any | None = None  # with_optimizer=True: what the run saved, else None

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def data_position(self) -> Any:
        return self.meta.get("data_position")

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta.get("metrics") or {})

    def restore_optimizers(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """Load the saved state into `optimizers` (built for this model, in the order they were
        saved: `{"optimizers": [state_dict, ...]}`, as the training loop and RL write it)."""
        saved = (self.optimizer_state or {}).get("optimizers")
        if saved is None or len(saved) != len(optimizers):
            raise checkpoint.CheckpointError(
                f"checkpoint {self.path} has no optimizer state for {len(optimizers)} optimizers to resume from"
            )
        for opt, state in zip(optimizers, saved, strict=True):
            opt.load_state_dict(state)


def load_model(
    name: str | os.PathLike[str],
    store: ArtifactStore | None = None,
    *,
    device: str | torch.device | None = None,
    serving: bool = False,
    tokenizer: Tokenizer | str | None = None,
    need_tokenizer: bool = True,
    with_optimizer: bool = False,
    sequence_len: int | None = None,
) -> LoadedModel:
    """Load a checkpoint by artifact name or directory (see the module docstring for the policy).

    `store` resolves artifact names and tokenizer names (default: $CHATFORGE_ARTIFACTS or
    ./artifacts). `tokenizer` overrides the one the checkpoint's meta names: a Tokenizer, a
    tokenizer artifact name or a tokenizer.json path. A checkpoint that names none is an error
    unless `need_tokenizer=False` (a server can take raw token ids). `sequence_len` replaces the
    saved context length (a later stage may train at another; rotary tables are computed, not
    learned). CheckpointError names what is wrong; ArtifactError a name that resolves to nothing.
    """
    store = store or ArtifactStore.from_env()
    path = resolve(name, store)
    ckpt = checkpoint.load(path, with_optimizer=with_optimizer)
    config = GPTConfig.from_dict(ckpt.meta["config"])
    if sequence_len is not None:
        config = replace(config, sequence_len=sequence_len)
    tok = _tokenizer(tokenizer if tokenizer is not None else ckpt.meta.get("tokenizer"), store)
    if tok is None and need_tokenizer:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} names no tokenizer in its {checkpoint.META_FILE}: give one explicitly"
        )
    if tok is not None and tok.vocab_size != config.vocab_size:
        raise checkpoint.CheckpointError(
            f"tokenizer {tok.name!r} has {tok.vocab_size} ids but checkpoint {path} was trained on "
            f"{config.vocab_size}: they do not belong together"
        )
    model = GPT(config)
    checkpoint.load_state_into(model, ckpt.model_state, source=path)
    dev = torch.device(device) if device is not None else default_device()
    model = model.to(dev, torch.bfloat16 if serving and dev.type == "cuda" else torch.float32).eval()
    log.info("loaded %s (%s, %.1fM parameters) on %s", name, path, model.num_params() / 1e6, dev)
    return LoadedModel(str(name), path, model, tok, ckpt.meta, ckpt.optimizer_state)


def resolve(name: str | os.PathLike[str], store: ArtifactStore) -> Path:
    """A checkpoint directory as given, else an artifact name resolved in `store`."""
    path = Path(name)
    if path.is_dir() and (path / checkpoint.META_FILE).is_file():
        return path
    return store.resolve_checkpoint(str(name))


def _tokenizer(spec: Tokenizer | str | None, store: ArtifactStore) -> Tokenizer | None:
    if spec is None or isinstance(spec, Tokenizer):
        return spec
    if not spec:
        return None
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return Tokenizer.load(path)
    return Tokenizer.load(store.find_tokenizer(spec))
