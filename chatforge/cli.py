"""The `chatforge` command.

Each part of the project registers its own subcommands through an `add_cli(subparsers)` function;
those modules import nothing heavy at import time, so `chatforge --help` stays fast and works in
images without PyTorch (a part whose package is not installed is left out of the command).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules that contribute subcommands, in the order they appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "trainer.corpus_build",  # `chatforge data corpus`: the bundled corpus builder
    "trainer.cli",
    "trainer.eval.cli",
    "inference_svc.cli",
    "tokenizer_svc.cli",
    "sandbox.cli",
    "gateway.cli",
    "chatforge.export.cli",  # `chatforge export hf` / `chatforge import hf`: to and from transformers
    "chatforge.up",  # `chatforge up|down|status`: every service above, together on one machine
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatforge",
        description="Train your own small ChatGPT from scratch and serve it.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only a missing optional part is skipped; a broken import inside a part is a bug.
            if e.name and (name == e.name or name.startswith(e.name + ".")):
                continue
            raise
        add_cli = getattr(module, "add_cli", None)
        if add_cli is not None:
            add_cli(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
