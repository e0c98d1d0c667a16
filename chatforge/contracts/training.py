"""The trainer's typed configuration: the training stages, the tokenizer, RL, and the presets.

A `TrainConfig` is built once at the edge (the CLI, the pipeline, a test, or the gateway checking a
job spec), validated there with errors that name the flag to change, and passed down whole: to the
Ray Train workers it travels as a plain dict (`to_dict`/`from_dict`), so a restarted worker group
rebuilds exactly the same run.

It lives with the contracts, not in `trainer/`, because the gateway validates a job against it
(`chatforge.contracts.jobs`) and the gateway's image carries no trainer: this module is stdlib only,
torch-free, and the one definition both sides import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

TRAIN_STAGES: tuple[str, ...] = ("base", "mid", "sft")
RL_STAGE = "rl"
# Which stage's checkpoint a stage starts from (base starts from random weights).
PARENT_STAGE: dict[str, str | None] = {"base": None, "mid": "base", "sft": "mid"}
TaskSource = Literal["offline", "hub"]  # generated rows in the real schemas, or the real datasets
PresetName = Literal["smoke", "tiny", "d12", "d20", "d26"]  # the keys of PRESETS (a test keeps them equal)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the flag (or field) to change.

    `problems` pairs each problem with the config field it is about ("" when no one field is), so a
    caller that knows fields rather than flags (the gateway checking a job's `config`) can name it.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.problems: tuple[tuple[str, str], ...] = tuple(problems) or (("", message),)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


MAX_WINDOW_PATTERN = 64


def window_pattern_problem(pattern: str) -> str:
    """Why a sliding-window pattern is invalid, "" when it is valid: 1-64 letters S or L (the model
    tiles it over its layers; chatforge.model.GPTConfig checks with this too)."""
    if not 1 <= len(pattern) <= MAX_WINDOW_PATTERN or set(pattern.upper()) - {"S", "L"}:
        return f"window_pattern must be 1-{MAX_WINDOW_PATTERN} letters S (short) or L (long), got {pattern!r}"
    return ""


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
    kv_group: int = 1  # query heads per key/value head (grouped-query attention); 1 = all their own
    # The architecture options (chatforge/model.py's GPTConfig; docs/model.md has what they measured).
    # Like depth, they shape a new model: base only; mid and SFT keep their parent checkpoint's.
    window_pattern: str = "L"  # sliding-window attention, tiled over the layers: S short, L long
    value_embeds: bool = False  # value embeddings on alternate layers (the last included)
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
    identity: str = ""  # mid/sft: identity file (name, maker, persona, conversations); "" = the default
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
    # rank 0's Prometheus /metrics on CHATFORGE_TRAIN_METRICS_HOST (127.0.0.1):<port>, 0 = off; on Ray
    # every worker also exports through Ray's metrics agent, whatever this is (trainer/telemetry.py)
    metrics_port: int = 0
    # distribution
    workers: int = 1
    use_gpu: bool = False
    compile: bool = True  # torch.compile the training forward on CUDA (ignored on CPU)
    # MFU's denominator, FLOP/s of one device; 0: measured by a matmul probe on CPU, the table of
    # known GPUs on CUDA (trainer/telemetry.py; $CHATFORGE_PEAK_FLOPS overrides both)
    peak_flops: float = 0.0
    max_failures: int = 2  # worker-group restarts Ray Train allows before the job fails
    resume: bool = True  # continue from this stage's latest checkpoint when there is one
    # fault injection for the resume test: rank 1 exits once at this step (marker file guards it)
    fail_at_step: int = 0
    fail_marker: str = ""

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []  # (field, message naming its flag)
        if self.stage not in TRAIN_STAGES:
            problems.append(("stage", f"stage must be one of {', '.join(TRAIN_STAGES)}, got {self.stage!r}"))
        for name in ("depth", "sequence_len", "device_batch_rows", "total_batch_tokens", "workers"):
            if getattr(self, name) < 1:
                problems.append((name, f"{_flag(name)} must be >= 1, got {getattr(self, name)}"))
        for name in (
            "num_steps",
            "log_every_steps",
            "eval_every_steps",
            "checkpoint_every_steps",
            "peak_flops",
        ):
            if getattr(self, name) < 0:
                problems.append((name, f"{_flag(name)} must be >= 0, got {getattr(self, name)}"))
        if self.task_source not in ("offline", "hub"):
            problems.append(
                ("task_source", f"--task-source must be 'offline' or 'hub', got {self.task_source!r}")
            )
        if self.kv_group < 1:
            problems.append(("kv_group", f"--kv-group must be >= 1, got {self.kv_group}"))
        if problem := window_pattern_problem(self.window_pattern):
            problems.append(("window_pattern", problem.replace("window_pattern", "--window-pattern", 1)))
        micro_tokens = self.device_batch_rows * self.sequence_len
        if micro_tokens >= 1 and self.workers >= 1:  # else reported above
            if self.total_batch_tokens % micro_tokens:
                problems.append((
                    "total_batch_tokens",
                    f"--total-batch-tokens ({self.total_batch_tokens}) must be a multiple of "
                    f"--device-batch-rows x --sequence-len ({micro_tokens})",
                ))  # fmt: skip
            elif (self.total_batch_tokens // micro_tokens) % self.workers:
                problems.append((
                    "workers",
                    f"the {self.total_batch_tokens // micro_tokens} micro-batches per step do not split "
                    f"evenly over --workers {self.workers}: change --workers or --total-batch-tokens",
                ))  # fmt: skip
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(m for _, m in problems), problems)

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
    """A whole pipeline: the tokenizer, the three training stages, then RL where it pays."""

    name: str
    tokenizer: TokenizerConfig
    stages: tuple[TrainConfig, ...]
    eval_docs: int = 200  # validation documents for each stage's bits per byte
    eval_examples: int = 0  # per chat eval task; 0 = all
    rl: RLConfig | None = None  # the RL stage's recipe (run after SFT when `with_rl`)
    with_rl: bool = False  # whether the pipeline runs RL unless told otherwise (`--rl`/`--no-rl`)
    rl_note: str = ""  # why RL is off by default, for the pipeline's output and the report


def preset(name: str, *, run: str, artifacts_dir: str, corpus_dir: str, workers: int = 1) -> Preset:
    """The named preset's recipe (see PRESETS); paths are made absolute (workers run elsewhere)."""
    artifacts_dir, corpus_dir = str(Path(artifacts_dir).absolute()), str(Path(corpus_dir).absolute())
    try:
        recipe = PRESETS[name]
    except KeyError:
        message = f"unknown --preset {name!r}; choose one of {', '.join(PRESETS)}"
        raise ConfigError(message, [("preset", message)]) from None
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
        # `--rl` runs it anyway: a few GRPO steps on short answers, minutes on a CPU
        rl=RLConfig(
            run=run,
            artifacts_dir=artifacts_dir,
            num_steps=10,
            questions_per_step=2,
            samples_per_question=4,
            max_new_tokens=64,
            eval_every_steps=5,
            eval_questions=8,
            checkpoint_every_steps=5,
            workers=workers,
        ),  # fmt: skip
        with_rl=False,
        rl_note="RL skipped for the tiny preset: a depth-2 model rarely gets a GSM8K-style answer right, "
        "so GRPO has almost no reward to learn from; pass --rl to run it anyway",
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
            # nanochat's chat_rl: GSM8K's train split, 16 samples a question, from the SFT model
            rl=RLConfig(
                run=run,
                artifacts_dir=artifacts_dir,
                num_steps=460,
                questions_per_step=2,
                samples_per_question=16,
                max_new_tokens=256,
                device_batch_rows=8,
                eval_every_steps=60,
                eval_questions=400,
                checkpoint_every_steps=60,
                task_source="hub",
                workers=workers,
                use_gpu=True,
            ),  # fmt: skip
            with_rl=True,
        )

    return recipe


def smoke(*, run: str, artifacts_dir: str, corpus_dir: str, workers: int = 1) -> Preset:
    """A job that proves the wiring, not a model: about a minute on CPU, most of it start-up.

    The end-to-end suite (tests/e2e/) trains base with it through the jobs API, on the tokenizer
    the stack serves, and then deploys the checkpoint: a depth-1 model, 20 steps of 256 tokens.
    """
    common = dict(
        run=run,
        artifacts_dir=artifacts_dir,
        corpus_dir=corpus_dir,
        depth=1,
        sequence_len=64,
        device_batch_rows=4,
        total_batch_tokens=4 * 64 * max(1, workers),
        workers=workers,
        log_every_steps=2,
        eval_every_steps=10,
        eval_batches=1,
        checkpoint_every_steps=10,
        task_rows=50,
    )
    return Preset(
        "smoke",
        TokenizerConfig(
            name=run, artifacts_dir=artifacts_dir, corpus_dir=corpus_dir, vocab_size=512, max_chars=500_000
        ),
        (
            TrainConfig(stage="base", num_steps=20, **common),  # type: ignore[arg-type]
            TrainConfig(stage="mid", num_steps=10, **common),  # type: ignore[arg-type]
            TrainConfig(stage="sft", num_steps=10, **common),  # type: ignore[arg-type]
        ),
        eval_docs=8,
        eval_examples=2,
    )


PRESETS: dict[str, Callable[..., Preset]] = {
    "smoke": smoke, "tiny": tiny, "d12": _cluster(12, 32), "d20": _cluster(20, 32), "d26": _cluster(26, 16),
}  # fmt: skip


# --- RL -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RLConfig:
    """The RL stage: GRPO on GSM8K-schema questions, starting from the SFT checkpoint."""

    run: str
    artifacts_dir: str
    init_from: str = ""  # checkpoint `run/stage[/step_N]`; default: this run's sft
    num_steps: int = 30
    questions_per_step: int = 4  # per rank
    samples_per_question: int = 8  # the GRPO group
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 50
    lr_frac: float = 0.05  # of the SFT learning rates; decays linearly to 0 (nanochat's chat_rl)
    device_batch_rows: int = 8  # completions per forward/backward
    eval_every_steps: int = 10
    eval_questions: int = 32
    pass_k: int = 4
    checkpoint_every_steps: int = 10
    keep_checkpoints: int = 2
    task_source: str = "offline"  # offline: generated GSM8K-schema rows; hub: openai/gsm8k train/val
    rows_file: str = ""  # a jsonl of GSM8K-schema rows to train on instead (question, answer)
    eval_rows_file: str = ""  # and to evaluate on
    offline_rows: int = 5000
    tools: str = "local"  # tool executor: local (in-process sandbox), an http:// sandbox URL, or none
    seed: int = 0
    workers: int = 1
    use_gpu: bool = False
    max_failures: int = 2  # worker-group restarts Ray Train allows before the job fails
    resume: bool = True
    job_id: str = ""
    metrics_port: int = 0
    # fault injection for the resume test: the last rank exits once at this step (marker file guards it)
    fail_at_step: int = 0
    fail_marker: str = ""

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []  # (field, message naming its flag)
        for name in ("num_steps", "questions_per_step", "samples_per_question", "max_new_tokens",
                     "device_batch_rows", "eval_questions", "pass_k", "checkpoint_every_steps",
                     "workers"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append((name, f"{_flag(name)} must be >= 1, got {getattr(self, name)}"))
        if self.samples_per_question == 1:
            problems.append((
                "samples_per_question",
                "--samples-per-question must be >= 2: the advantage compares samples of a group",
            ))  # fmt: skip
        if self.eval_every_steps < 0:
            problems.append(
                ("eval_every_steps", f"--eval-every-steps must be >= 0, got {self.eval_every_steps}")
            )
        if not 0 < self.lr_frac <= 1:
            problems.append(("lr_frac", f"--lr-frac must be in (0, 1], got {self.lr_frac}"))
        if self.task_source not in ("offline", "hub"):
            problems.append(
                ("task_source", f"--task-source must be offline or hub, got {self.task_source!r}")
            )
        if problems:
            raise ConfigError("invalid RL config: " + "; ".join(m for _, m in problems), problems)

    @property
    def parent_checkpoint(self) -> str:
        return self.init_from or f"{self.run}/sft"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RLConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown RL config fields {sorted(unknown)}")
        return cls(**data)
