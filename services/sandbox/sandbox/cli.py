"""`chatforge sandbox ...`: serve the sandbox, run one snippet in it, or show its isolation.

Nothing heavy is imported until a command runs, so `chatforge --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser("sandbox", help="the isolated Python tool-execution service")
    sub = parser.add_subparsers(dest="sandbox_command", metavar="<sandbox command>", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (POST /v1/run, /healthz, /info, /metrics)")
    serve.add_argument("--host", help="bind address (default 127.0.0.1; env CHATFORGE_SANDBOX_HOST)")
    serve.add_argument("--port", type=int, help="port, 0 for a free one (env CHATFORGE_SANDBOX_PORT)")
    _add_settings_flags(serve)
    serve.set_defaults(func=_serve)

    run = sub.add_parser("run", help="run one snippet (in process, or on a service with --url)")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="Python file to run ('-' for stdin)")
    source.add_argument("-c", dest="code", help="Python code to run")
    run.add_argument("--url", help="a running sandbox service, e.g. http://127.0.0.1:8092")
    run.add_argument("--timeout-s", type=float, help="wall-clock limit")
    run.add_argument("--memory-mb", type=int, help="address-space limit per process")
    run.add_argument("--output-bytes", type=int, help="stdout/stderr cap")
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_settings_flags(run)
    run.set_defaults(func=_run)

    info = sub.add_parser("info", help="detect and print the isolation this host supports")
    _add_settings_flags(info)
    info.set_defaults(func=_info)


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mode", choices=["auto", "namespaces", "weak"], help="isolation mode (default auto)"
    )
    parser.add_argument("--max-concurrent", type=int, help="runs executing at once")
    parser.add_argument("--max-queue", type=int, help="runs waiting beyond that before 'busy'")


def _settings(args: argparse.Namespace, **extra: object) -> Any:
    from .settings import SettingsError, load_settings

    try:
        return load_settings(
            mode=args.mode, max_concurrent=args.max_concurrent, max_queue=args.max_queue, **extra
        )
    except SettingsError as e:
        raise SystemExit(str(e)) from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .isolation import SandboxUnavailable

    settings = _settings(args, host=args.host, port=args.port)
    try:
        app = create_app(settings)
    except SandboxUnavailable as e:
        print(f"sandbox cannot start: {e}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False)
    return 0


def _run(args: argparse.Namespace) -> int:
    from chatforge.tools import ToolLimits

    code = args.code if args.code is not None else _read_source(args.file)
    settings = _settings(args)
    defaults = settings.default_limits()
    limits = ToolLimits(
        timeout_s=args.timeout_s if args.timeout_s is not None else defaults.timeout_s,
        memory_mb=args.memory_mb if args.memory_mb is not None else defaults.memory_mb,
        output_bytes=args.output_bytes if args.output_bytes is not None else defaults.output_bytes,
    )
    try:
        if args.url:
            from chatforge.sandbox_client import SandboxClient

            with SandboxClient(args.url) as client:
                result = client.run(code, limits)
        else:
            from .executor import SandboxExecutor

            with SandboxExecutor(settings) as executor:
                result = executor.run(code, limits)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if not result.ok:
            print(f"[{result.outcome}] {result.message}", file=sys.stderr)
    return 0 if result.ok else 1


def _read_source(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _info(args: argparse.Namespace) -> int:
    from .executor import SandboxExecutor

    with SandboxExecutor(_settings(args)) as executor:  # probes exactly as the service would
        iso = executor.isolation
        info: dict[str, Any] = {"mode": iso.mode, "weak_reason": iso.reason, "layers": iso.layers()}
        info.update(python=iso.python, run_uids=executor.run_uids)
    print(json.dumps(info, indent=2))
    return 0
