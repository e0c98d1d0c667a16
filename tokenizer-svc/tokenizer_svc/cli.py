"""`chatforge serve-tokenizer` runs the service; `chatforge tokenizer-client` calls a running one.

Flags override the environment (`CHATFORGE_TOKENIZER_*`, see settings.py), whose defaults live in
Settings only. Nothing heavy is imported until a command runs, so `chatforge --help` stays fast.
`python -m tokenizer_svc` offers the same two commands without loading any other part's CLI: the
image's entry point, where the other parts' dependencies (torch, ray) are not installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

TARGET_ENV = "CHATFORGE_TOKENIZER_TARGET"
TOKEN_ENV = "CHATFORGE_TOKENIZER_ADMIN_TOKEN"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tokenizer_svc", description="The chatforge tokenizer service."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_cli(parser.add_subparsers(dest="command", metavar="<command>", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(args.func(args))


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve-tokenizer",
        help="run the gRPC tokenizer service",
        description="Serve a tokenizer from the artifact store over gRPC (health, reflection, /metrics). "
        "SIGHUP reloads it; SIGTERM stops gracefully. Unset flags come from CHATFORGE_TOKENIZER_* variables.",
    )
    serve.add_argument("--name", help="tokenizer name in the artifact store (CHATFORGE_TOKENIZER_NAME)")
    serve.add_argument("--artifacts", dest="artifacts_root", help="artifact store root (CHATFORGE_ARTIFACTS)")
    serve.add_argument("--host", help="address to bind (CHATFORGE_TOKENIZER_HOST)")
    serve.add_argument("--port", type=int, help="gRPC port, 0 for any free one (CHATFORGE_TOKENIZER_PORT)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port (CHATFORGE_TOKENIZER_METRICS_PORT)")
    serve.add_argument("--workers", type=int, help="RPC threads (CHATFORGE_TOKENIZER_WORKERS)")
    serve.set_defaults(func=_serve)

    client = subparsers.add_parser(
        "tokenizer-client",
        help="call a running tokenizer service",
        description="Call the tokenizer service at --target and print the answer as JSON.",
    )
    client.add_argument(
        "--target", default=None, help=f"host:port of the service (${TARGET_ENV}, default 127.0.0.1:50051)"
    )
    client.add_argument("--timeout-s", type=float, default=10.0, help="deadline per call, seconds")
    actions = client.add_subparsers(dest="action", metavar="<action>", required=True)
    actions.add_parser("encode", help="text -> ids").add_argument("text")
    actions.add_parser("count", help="number of tokens in a text").add_argument("text")
    actions.add_parser("decode", help="ids -> text").add_argument("ids", type=int, nargs="+")
    actions.add_parser(
        "render", help="a conversation (JSON, or - for stdin) -> ids and loss mask"
    ).add_argument("conversation")
    actions.add_parser("info", help="name, fingerprint, vocabulary size, special tokens")
    reload = actions.add_parser("reload", help="make the server load a tokenizer (default: its current one)")
    reload.add_argument("name", nargs="?")
    reload.add_argument(
        "--admin-token",
        default=None,
        help=f"the server's admin token (${TOKEN_ENV}); not needed for a server on loopback without one",
    )
    client.set_defaults(func=_client)


def _serve(args: argparse.Namespace) -> int:
    from chatforge.artifacts import ArtifactError
    from chatforge.tokenizer import TokenizerError
    from tokenizer_svc.server import ServerError, serve
    from tokenizer_svc.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            name=args.name,
            artifacts_root=args.artifacts_root,
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            workers=args.workers,
        )
        return serve(settings)
    except (SettingsError, ArtifactError, TokenizerError, ServerError) as e:
        print(f"serve-tokenizer: {e}", file=sys.stderr)
        return 2


def _client(args: argparse.Namespace) -> int:
    from chatforge.chat import ConversationError
    from chatforge.tokenizer_client import DEFAULT_TARGET, TokenizerClient, TokenizerServiceError

    target = args.target or os.environ.get(TARGET_ENV) or DEFAULT_TARGET
    try:
        with TokenizerClient(target, timeout_s=args.timeout_s) as client:
            if args.action == "encode":
                out: object = client.encode(args.text)
            elif args.action == "count":
                out = client.count_tokens(args.text)
            elif args.action == "decode":
                out = client.decode(args.ids)
            elif args.action == "render":
                raw = sys.stdin.read() if args.conversation == "-" else args.conversation
                rendered = client.render_conversation(json.loads(raw))
                out = {"ids": rendered.ids, "loss_mask": rendered.mask, "truncated": rendered.truncated}
            elif args.action == "info":
                out = client.info().__dict__
            else:
                token = args.admin_token or os.environ.get(TOKEN_ENV, "")
                out = client.reload(args.name, admin_token=token).__dict__
    except (TokenizerServiceError, ConversationError, json.JSONDecodeError) as e:
        print(f"tokenizer-client: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, ensure_ascii=False))
    return 0
