"""The RL stage's configuration (torch-free, so the CLI can build its flags without PyTorch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .config import ConfigError

STAGE = "rl"


@dataclass(frozen=True)
class RLConfig:
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
    resume: bool = True
    job_id: str = ""
    metrics_port: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("num_steps", "questions_per_step", "samples_per_question", "max_new_tokens",
                     "device_batch_rows", "eval_questions", "pass_k", "workers"):  # fmt: skip
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.samples_per_question < 2:
            problems.append("--samples-per-question must be >= 2: the advantage compares samples of a group")
        if not 0 < self.lr_frac <= 1:
            problems.append(f"--lr-frac must be in (0, 1], got {self.lr_frac}")
        if self.task_source not in ("offline", "hub"):
            problems.append(f"--task-source must be offline or hub, got {self.task_source!r}")
        if problems:
            raise ConfigError("invalid RL config: " + "; ".join(problems))

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
