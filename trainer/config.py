"""Typed configuration for the training stages, and one recipe function per preset.

A `TrainConfig` is built once at the edge (the CLI, the pipeline, a test), validated there with
errors that name the flag to change, and passed down whole: to the Ray Train workers it travels as
a plain dict (`to_dict`/`from_dict`), so a restarted worker group rebuilds exactly the same run.

Torch-free: the CLI imports this to parse flags without loading PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

TRAIN_STAGES: tuple[str, ...] = ("base", "mid", "sft")
# Which stage's checkpoint a stage starts from (base starts from random weights).
PARENT_STAGE: dict[str, str | None] = {"base": None, "mid": "base", "sft": "mid"}


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the flag (or field) to change."""


class TrainError(RuntimeError):
    """A stage that cannot start: a missing tokenizer or parent checkpoint, a mismatched resume."""


@dataclass(frozen=True)
class OptimConfig:
    """Muon for the block matrices, AdamW for the embedding and head (nanochat's learning rates)."""

    matrix_lr: float = 0.02  # Muon; nanochat's value, stable from d4 to d32
    embedding_lr: float = 0.2  # AdamW, scaled by (768 / width)^0.5 like nanochat
    unembedding_lr: float = 0.004
    weight_decay: float = 0.0
    adam_beta1: float = 0.8  # lower than the usual 0.9: the embedding moves fast early (nanochat)
    adam_beta2: float = 0.95
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # ramped to muon_momentum over the first steps (Keller Jordan)
    muon_momentum_warmup_steps: int = 300
    warmup_ratio: float = 0.0  # fraction of steps with a linear LR ramp up from 0
    warmdown_ratio: float = 0.2  # fraction of final steps with a linear LR ramp down
    final_lr_frac: float = 0.0  # LR at the last step, as a fraction of the peak
    grad_clip: float = 1.0  # global grad-norm clip; 0 turns it off


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (base, mid or sft) of one run."""

    stage: str
    run: str
    artifacts_dir: str
    tokenizer: str = ""  # tokenizer artifact name; defaults to the run name
    # model: the depth scaling rule (chatforge.model.GPTConfig.from_depth) decides width and heads
    depth: int = 2
    sequence_len: int = 128
    kv_group: int = 1
    # batch: every step sees total_batch_tokens, split into micro-batches of device_batch_rows rows
    device_batch_rows: int = 4
    total_batch_tokens: int = 2048
    # length: num_steps wins; else token budget = tokens_per_param * params (base) or one data pass
    num_steps: int = 0
    tokens_per_param: float = 20.0
    # data
    corpus_dir: str = "data/corpus"  # base: parquet shards in FineWeb-Edu schema
    unit_docs: int = 64  # base: documents per packing unit (a slice of a parquet row group)
    task_source: str = "offline"  # mid/sft: "offline" (generated rows) or "hub" (the real datasets)
    task_rows: int = 2000  # mid/sft: generated rows per task (offline) or a cap per task (hub)
    unit_conversations: int = 32  # mid: conversations per packing unit
    init_from: str = ""  # checkpoint name `run/stage` to start from; default: this run's parent stage
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    # observability and checkpoints
    log_every_steps: int = 10
    eval_every_steps: int = 50  # validation bits-per-byte; 0 = only at the end
    eval_batches: int = 4
    sample_every_steps: int = 0  # a few greedy completions; 0 = only at the end
    checkpoint_every_steps: int = 50
    keep_checkpoints: int = 2
    job_id: str = ""  # progress events go to Redis stream chatforge:job:<job_id>:events
    metrics_port: int = 0  # Prometheus /metrics on 127.0.0.1:<port> from rank 0; 0 = off
    # distribution
    workers: int = 1
    use_gpu: bool = False
    compile: bool = True  # torch.compile the training forward on CUDA (ignored on CPU)
    max_failures: int = 2  # worker-group restarts Ray Train allows before the job fails
    resume: bool = True  # continue from this stage's latest checkpoint when there is one
    # fault injection for the resume test: rank 1 exits once at this step (marker file guards it)
    fail_at_step: int = 0
    fail_marker: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.stage not in TRAIN_STAGES:
            problems.append(f"stage must be one of {', '.join(TRAIN_STAGES)}, got {self.stage!r}")
        for name in ("depth", "sequence_len", "device_batch_rows", "total_batch_tokens", "workers"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("num_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.task_source not in ("offline", "hub"):
            problems.append(f"--task-source must be 'offline' or 'hub', got {self.task_source!r}")
        micro_tokens = self.device_batch_rows * self.sequence_len
        if self.total_batch_tokens % micro_tokens:
            problems.append(
                f"--total-batch-tokens ({self.total_batch_tokens}) must be a multiple of "
                f"--device-batch-rows x --sequence-len ({micro_tokens})"
            )
        elif (self.total_batch_tokens // micro_tokens) % self.workers:
            problems.append(
                f"the {self.total_batch_tokens // micro_tokens} micro-batches per step do not split "
                f"evenly over --workers {self.workers}: change --workers or --total-batch-tokens"
            )
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.run

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches in one global step; each is a data slot, and rank r takes slots r, r+W, ..."""
        return self.total_batch_tokens // (self.device_batch_rows * self.sequence_len)

    @property
    def parent_checkpoint(self) -> str:
        """The checkpoint this stage starts from (`run/stage`), or "" for random init."""
        if self.init_from:
            return self.init_from
        parent = PARENT_STAGE[self.stage]
        return f"{self.run}/{parent}" if parent else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown training config fields {sorted(unknown)}")
        data = dict(data)
        if isinstance(data.get("optim"), dict):
            data["optim"] = OptimConfig(**data["optim"])
        return cls(**data)

    def with_(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class TokenizerConfig:
    """The tokenizer stage: BPE trained on the corpus's training shards."""

    name: str
    artifacts_dir: str
    corpus_dir: str = "data/corpus"
    vocab_size: int = 4096
    max_chars: int = 20_000_000  # nanochat trains on 2B chars; a few MB suffice for a small vocab
    doc_cap_chars: int = 10_000


@dataclass(frozen=True)
class Preset:
    """A whole pipeline: the tokenizer and the three training stages."""

    name: str
    tokenizer: TokenizerConfig
    stages: tuple[TrainConfig, ...]
    eval_docs: int = 200  # validation documents for each stage's bits per byte
    eval_examples: int = 0  # per chat eval task; 0 = all


def preset(name: str, *, run: str, artifacts_dir: str, corpus_dir: str, workers: int = 1) -> Preset:
    """The named preset's recipe (see PRESETS); paths are made absolute (workers run elsewhere)."""
    artifacts_dir, corpus_dir = str(Path(artifacts_dir).absolute()), str(Path(corpus_dir).absolute())
    try:
        recipe = PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown --preset {name!r}; choose one of {', '.join(PRESETS)}") from None
    return recipe(run=run, artifacts_dir=artifacts_dir, corpus_dir=corpus_dir, workers=workers)


def tiny(*, run: str, artifacts_dir: str, corpus_dir: str, workers: int = 1) -> Preset:
    """The CPU demo: a depth-2 model (128 wide) on a 2k vocab, a few minutes on 2 cores in total.

    About 1M tokens of base training (~1 token per parameter, far short of Chinchilla's 20: the
    demo shows the pipeline, not a good model), then short mid and SFT passes.
    """
    common = dict(
        run=run,
        artifacts_dir=artifacts_dir,
        corpus_dir=corpus_dir,
        depth=2,
        sequence_len=256,
        device_batch_rows=16,  # 16 x 256 tokens: per-op overhead dominates smaller CPU batches
        total_batch_tokens=16 * 256 * max(1, workers),
        workers=workers,
        log_every_steps=20,
        eval_batches=4,
        checkpoint_every_steps=50,
    )
    return Preset(
        "tiny",
        TokenizerConfig(name=run, artifacts_dir=artifacts_dir, corpus_dir=corpus_dir, vocab_size=2048),
        (
            TrainConfig(stage="base", num_steps=250, eval_every_steps=50, **common),  # type: ignore[arg-type]
            TrainConfig(stage="mid", num_steps=60, eval_every_steps=30, task_rows=3000, **common),  # type: ignore[arg-type]
            TrainConfig(stage="sft", num_steps=40, eval_every_steps=20, task_rows=1000, **common),  # type: ignore[arg-type]
        ),
        eval_docs=50,  # a quick bits-per-byte and 16 examples per chat task keep the evals to seconds
        eval_examples=16,
    )


def _cluster(depth: int, device_batch_rows: int) -> Any:
    """nanochat's GPU sizes: 2048 context, 524,288-token steps, Chinchilla-sized base training."""

    def recipe(*, run: str, artifacts_dir: str, corpus_dir: str, workers: int = 8) -> Preset:
        common = dict(
            run=run,
            artifacts_dir=artifacts_dir,
            corpus_dir=corpus_dir,
            depth=depth,
            sequence_len=2048,
            device_batch_rows=device_batch_rows,
            total_batch_tokens=524_288,
            workers=workers,
            use_gpu=True,
            task_source="hub",
            task_rows=0,
            log_every_steps=10,
            eval_every_steps=250,
            eval_batches=20,
            checkpoint_every_steps=500,
            unit_docs=1024,
        )
        return Preset(
            f"d{depth}",
            TokenizerConfig(
                name=run,
                artifacts_dir=artifacts_dir,
                corpus_dir=corpus_dir,
                vocab_size=65_536,
                max_chars=2_000_000_000,
            ),
            (
                TrainConfig(stage="base", **common),  # type: ignore[arg-type]
                TrainConfig(stage="mid", num_steps=800, **common),  # type: ignore[arg-type]
                TrainConfig(stage="sft", num_steps=700, **common),  # type: ignore[arg-type]
            ),
        )

    return recipe


PRESETS = {"tiny": tiny, "d12": _cluster(12, 32), "d20": _cluster(20, 32), "d26": _cluster(26, 16)}
