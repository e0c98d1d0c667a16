"""`chatforge train <stage>`, `chatforge pipeline` and `chatforge demo`.

Flags are parsed once here into typed configs: a stage's defaults come from the preset's recipe
(`--preset`, `tiny` by default) and any flag given overrides that field. Torch-free at import time,
so `chatforge --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from chatforge.contracts.training import PRESETS, TRAIN_STAGES, ConfigError, TrainConfig, preset

from .errors import TrainError

# TrainConfig fields exposed as --flags (the rest are set by presets or tests)
TRAIN_FLAGS: tuple[str, ...] = (
    "tokenizer", "depth", "sequence_len", "device_batch_rows", "total_batch_tokens", "num_steps",
    "corpus_dir", "task_source", "task_rows", "init_from", "seed", "log_every_steps",
    "eval_every_steps", "sample_every_steps", "checkpoint_every_steps", "job_id", "metrics_port",
    "workers", "max_failures",
)  # fmt: skip
_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="run one stage (tokenizer, base, mid, sft, eval, rl, report) or the pipeline"
    )
    train_sub = train.add_subparsers(dest="stage", required=True, metavar="<stage>")
    tok = train_sub.add_parser("tokenizer", help="train the BPE tokenizer on the corpus")
    _common(tok)
    tok.add_argument("--vocab-size", type=int, default=None, help="vocabulary size (default: the preset's)")
    tok.add_argument("--corpus-dir", default=None, help="parquet corpus (default: data/corpus)")
    tok.add_argument("--redo", action="store_true", help="retrain even if the tokenizer exists")
    tok.add_argument("--job-id", default="", help="job id (accepted for the jobs API; unused here)")
    tok.set_defaults(func=_cli_tokenizer)
    for stage in TRAIN_STAGES:
        p = train_sub.add_parser(stage, help=f"{stage} training as a Ray Train job")
        _common(p)
        _train_flags(p)
        p.set_defaults(func=_cli_train)

    from .eval.cli import add_train_stages

    add_train_stages(train_sub)

    # `chatforge pipeline` and `chatforge train pipeline` (the form the jobs API runs) are the same
    for pipe in (
        subparsers.add_parser(
            "pipeline", help="tokenizer -> base -> mid -> sft -> eval -> report, skipping finished stages"
        ),
        train_sub.add_parser(
            "pipeline", help="tokenizer -> base -> mid -> sft -> eval -> report, skipping finished stages"
        ),
    ):
        _common(pipe)
        pipe.add_argument("--corpus-dir", default="data/corpus", help="parquet corpus (default: data/corpus)")
        pipe.add_argument("--workers", type=int, default=1, help="Ray Train workers per stage (default: 1)")
        pipe.add_argument("--job-id", default="", help="send progress events to this job's Redis stream")
        pipe.add_argument(
            "--redo", nargs="*", default=[], choices=("tokenizer", *TRAIN_STAGES), help="stages to run again"
        )
        pipe.set_defaults(func=_cli_pipeline)

    demo = subparsers.add_parser("demo", help="the tiny pipeline on the bundled corpus, then a chat sample")
    demo.add_argument("--data", default="data/corpus", help="the bundled corpus (default: data/corpus)")
    demo.add_argument("--run-dir", default="runs/demo", help="where the artifacts go (default: runs/demo)")
    demo.add_argument("--workers", type=int, default=1, help="Ray Train workers per stage (default: 1)")
    demo.add_argument("--local", action="store_true", help="train in this process instead of on Ray")
    demo.add_argument("--redo", action="store_true", help="start over instead of reusing finished stages")
    demo.set_defaults(func=_cli_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default="demo", help="run name: artifacts go to <artifacts>/runs/<run>")
    p.add_argument(
        "--artifacts", default=None, help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )
    p.add_argument(
        "--preset", default="tiny", choices=sorted(PRESETS), help="recipe for the defaults (default: tiny)"
    )
    p.add_argument(
        "--local", action="store_true", help="train in this process (one worker) instead of on Ray"
    )


def _train_flags(p: argparse.ArgumentParser) -> None:
    for name in TRAIN_FLAGS:
        kind = {"int": int, "float": float}.get(str(_TYPES[name]), str)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"override {name}")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker (NCCL)")
    p.add_argument("--no-resume", dest="resume", action="store_false", default=None,
                   help="start over instead of continuing from the stage's latest checkpoint")  # fmt: skip


def stage_config(args: argparse.Namespace) -> TrainConfig:
    """The stage's TrainConfig: the preset's recipe with every flag given applied."""
    recipe = _preset(args, workers=args.workers or 1)
    base = next(s for s in recipe.stages if s.stage == args.stage)
    changes: dict[str, Any] = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    if args.gpu:
        changes["use_gpu"] = True
    if args.resume is not None:
        changes["resume"] = args.resume
    return replace(base, **changes)


def _preset(args: argparse.Namespace, *, workers: int) -> Any:
    from chatforge.artifacts import ArtifactStore

    root = str(ArtifactStore.from_env(args.artifacts).root)
    corpus = getattr(args, "corpus_dir", None) or "data/corpus"
    return preset(args.preset, run=args.run, artifacts_dir=root, corpus_dir=corpus, workers=workers)


def _cli_tokenizer(args: argparse.Namespace) -> int:
    from .stages.tokenizer import train_tokenizer

    def run() -> None:
        cfg = _preset(args, workers=1).tokenizer
        if args.vocab_size:
            cfg = replace(cfg, vocab_size=args.vocab_size)
        train_tokenizer(cfg, redo=args.redo)

    return _guard(run)


def _cli_train(args: argparse.Namespace) -> int:
    def run() -> None:
        from .driver import ray_session, run_stage

        cfg = stage_config(args)
        if args.local:
            print(run_stage(cfg, launcher="local"))
            return
        from chatforge.artifacts import ArtifactStore

        with ray_session(ArtifactStore(Path(cfg.artifacts_dir)).run_dir(cfg.run)):
            print(run_stage(cfg, launcher="ray"))

    return _guard(run)


def _cli_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    return _guard(
        lambda: run_pipeline(_preset(args, workers=args.workers), redo=set(args.redo), local=args.local)
    )


def _cli_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return _guard(
        lambda: run_demo(args.data, args.run_dir, workers=args.workers, local=args.local, redo=args.redo)
    )


def _guard(fn: Any) -> int:
    """Run a command; errors a user can fix are one line on stderr and exit status 1."""
    from chatforge.artifacts import ArtifactError
    from chatforge.checkpoint import CheckpointError
    from chatforge.tokenizer import TokenizerError

    from .data import DataError

    try:
        fn()
    except (ConfigError, TrainError, DataError, ArtifactError, CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
