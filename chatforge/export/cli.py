"""`chatforge export hf <checkpoint> <dir>` and `chatforge import hf <dir> <run/stage>`.

Nothing heavy is imported until a command runs; a bad input is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_cli(subparsers: Any) -> None:
    export = subparsers.add_parser("export", help="write a checkpoint in another format")
    export_sub = export.add_subparsers(dest="export_format", metavar="<format>", required=True)
    hf = export_sub.add_parser(
        "hf",
        help="a Hugging Face transformers directory (AutoModelForCausalLM, AutoTokenizer, chat template)",
        description="Load the result with AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True) "
        "and AutoTokenizer.from_pretrained(dir).",
    )
    hf.add_argument("checkpoint", help="artifact name (run/stage[/step_N]) or checkpoint directory")
    hf.add_argument("dir", help="the directory to write (must be empty or absent unless --force)")
    hf.add_argument("--artifacts", help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)")
    hf.add_argument("--force", action="store_true", help="replace a non-empty directory")
    hf.set_defaults(func=run_export_hf)

    imp = subparsers.add_parser("import", help="bring a model exported by chatforge back as a checkpoint")
    imp_sub = imp.add_subparsers(dest="import_format", metavar="<format>", required=True)
    hf_in = imp_sub.add_parser("hf", help="a directory written by `chatforge export hf`")
    hf_in.add_argument("dir", help="the exported directory")
    hf_in.add_argument("checkpoint", help="where it goes: run/stage (at the exported step)")
    hf_in.add_argument(
        "--artifacts", help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )
    hf_in.add_argument(
        "--tokenizer-name", help="store the tokenizer under this name (default: its exported name)"
    )
    hf_in.add_argument("--force", action="store_true", help="replace a checkpoint already at that step")
    hf_in.set_defaults(func=run_import_hf)


def run_export_hf(args: argparse.Namespace) -> int:
    from chatforge.artifacts import ArtifactStore
    from chatforge.export.hf import export_hf

    try:
        out = export_hf(
            args.checkpoint, args.dir, store=ArtifactStore.from_env(args.artifacts), force=args.force
        )
    except _errors() as e:
        print(f"export: {e}", file=sys.stderr)
        return 1
    print(f"exported {args.checkpoint} to {out}")
    return 0


def run_import_hf(args: argparse.Namespace) -> int:
    from chatforge.artifacts import ArtifactStore
    from chatforge.export.hf import import_hf

    try:
        path = import_hf(
            args.dir, args.checkpoint, store=ArtifactStore.from_env(args.artifacts),
            tokenizer_name=args.tokenizer_name, force=args.force,
        )  # fmt: skip
    except _errors() as e:
        print(f"import: {e}", file=sys.stderr)
        return 1
    print(f"imported {args.dir} as {path}")
    return 0


def _errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises: a missing or foreign checkpoint, export or name, a full disk."""
    from chatforge.artifacts import ArtifactError
    from chatforge.checkpoint import CheckpointError
    from chatforge.export.hf import ExportError
    from chatforge.tokenizer import TokenizerError

    return (ExportError, CheckpointError, ArtifactError, TokenizerError, OSError)
