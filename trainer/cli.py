"""`chatforge train <stage>`, `chatforge pipeline` and `chatforge demo`.

Each stage's flags are its model in `chatforge.contracts.jobs` (the same models the gateway checks a
job's `config` against): argparse options are built from the model, what was parsed is validated
through it, and its `resolve` turns it into the stage's typed config (a stage's defaults come from
the preset's recipe, `--preset`, `tiny` by default; any flag given overrides that field). Torch-free
at import time, so `chatforge --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from chatforge.contracts.jobs import PipelineFlags, TokenizerFlags, TrainFlags, add_flags, rates_of
from chatforge.contracts.training import TRAIN_STAGES, ConfigError, TrainConfig

from .errors import TrainError


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="run one stage (tokenizer, base, mid, sft, eval, rl, report) or the pipeline"
    )
    train_sub = train.add_subparsers(dest="stage", required=True, metavar="<stage>")
    tok = train_sub.add_parser("tokenizer", help="train the BPE tokenizer on the corpus")
    add_launch_flags(tok)
    add_flags(tok, TokenizerFlags)
    tok.set_defaults(func=_cli_tokenizer)
    for stage in TRAIN_STAGES:
        p = train_sub.add_parser(stage, help=f"{stage} training as a Ray Train job")
        add_launch_flags(p)
        add_flags(p, TrainFlags)
        p.set_defaults(func=_cli_train)

    from .eval.cli import add_train_stages

    add_train_stages(train_sub)

    # `chatforge pipeline` and `chatforge train pipeline` (the form the jobs API runs) are the same
    for pipe in (
        subparsers.add_parser(
            "pipeline",
            help="tokenizer -> base -> mid -> sft -> rl (where the preset says, or --rl) -> eval -> report, skipping finished stages",
        ),
        train_sub.add_parser(
            "pipeline",
            help="tokenizer -> base -> mid -> sft -> rl (where the preset says, or --rl) -> eval -> report, skipping finished stages",
        ),
    ):
        add_launch_flags(pipe)
        add_flags(pipe, PipelineFlags)
        pipe.set_defaults(func=_cli_pipeline)

    demo = subparsers.add_parser("demo", help="the tiny pipeline on the bundled corpus, then a chat sample")
    demo.add_argument("--data", default="data/corpus", help="the bundled corpus (default: data/corpus)")
    demo.add_argument("--run-dir", default="runs/demo", help="where the artifacts go (default: runs/demo)")
    demo.add_argument("--workers", type=int, default=1, help="Ray Train workers per stage (default: 1)")
    demo.add_argument("--local", action="store_true", help="train in this process instead of on Ray")
    demo.add_argument("--redo", action="store_true", help="start over instead of reusing finished stages")
    demo.set_defaults(func=_cli_demo)


def add_launch_flags(p: argparse.ArgumentParser) -> None:
    """Where a stage runs and for whom: not flags of a job's `config` (the gateway sets the run and
    job id, the job's environment the artifact store)."""
    p.add_argument("--run", default="demo", help="run name: artifacts go to <artifacts>/runs/<run>")
    p.add_argument(
        "--artifacts", default=None, help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )
    p.add_argument("--job-id", default="", help="send progress events to this job's Redis stream")


def stage_config(args: argparse.Namespace) -> TrainConfig:
    """The stage's TrainConfig from parsed arguments (`TrainFlags.resolve`, as the gateway checks it)."""
    flags = TrainFlags.from_args(args)
    cfg = flags.resolve(args.stage, run=args.run, artifacts_dir=_root(args), job_id=args.job_id)
    if cfg.identity:
        from .identity import load_identity

        load_identity(cfg.identity)  # a bad identity file is one line now, not a worker's traceback
    return cfg


def _root(args: argparse.Namespace) -> str:
    from chatforge.artifacts import ArtifactStore

    return str(ArtifactStore.from_env(args.artifacts).root)


def _cli_tokenizer(args: argparse.Namespace) -> int:
    from .stages.tokenizer import train_tokenizer

    def run() -> None:
        flags = TokenizerFlags.from_args(args)
        train_tokenizer(flags.resolve(run=args.run, artifacts_dir=_root(args)), redo=flags.redo)

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

    def run() -> None:
        flags = PipelineFlags.from_args(args)
        recipe = flags.resolve(run=args.run, artifacts_dir=_root(args), job_id=args.job_id)
        run_pipeline(recipe, redo=set(flags.redo), local=flags.local, rates=rates_of(flags.rate))

    return _guard(run)


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
