"""The trainer's own runtime error (its configuration errors are `chatforge.contracts.training.ConfigError`)."""

from __future__ import annotations


class TrainError(RuntimeError):
    """A stage that cannot start: a missing tokenizer or parent checkpoint, a mismatched resume."""
