"""`python -m sandbox serve|run|info`: the sandbox's commands alone, for its image, where the other
parts of the `chatforge` command may lack their packages (PyTorch, Ray)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .cli import add_cli


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sandbox", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
