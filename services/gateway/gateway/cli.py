"""`chatforge gateway serve` and `chatforge keys create|list|revoke`.

Nothing heavy is imported until a command runs, so `chatforge --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_cli(subparsers: Any) -> None:
    gateway = subparsers.add_parser("gateway", help="the HTTP gateway (OpenAI-compatible chat, jobs, models)")
    gsub = gateway.add_subparsers(dest="gateway_command", metavar="<command>", required=True)
    serve = gsub.add_parser("serve", help="run the gateway (settings from CHATFORGE_GATEWAY_* and flags)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--mode", choices=["local", "remote"], help="tokenizer and engine in process, or services"
    )
    serve.add_argument("--checkpoint", help="local mode: checkpoint to serve (run/stage[/step_N])")
    serve.add_argument("--job-backend", choices=["local", "ray", "kuberay"])
    serve.add_argument("--ray-address", help="Ray dashboard URL for the ray backend")
    serve.set_defaults(func=_serve)

    keys = subparsers.add_parser("keys", help="create, list and revoke gateway API keys (in Redis)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="<command>", required=True)
    create = ksub.add_parser("create", help="create a key; it is printed once and never stored")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument(
        "--scope", action="append", choices=["chat", "admin"], help="repeatable; default chat"
    )
    create.set_defaults(func=_keys_create)
    listing = ksub.add_parser("list", help="list keys (ids, names, scopes; never the keys)")
    listing.set_defaults(func=_keys_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_keys_revoke)


def _settings(args: argparse.Namespace) -> Any:
    from gateway.settings import SettingsError, load_settings

    overrides = {
        k: getattr(args, k, None)
        for k in ("host", "port", "mode", "checkpoint", "job_backend", "ray_address")
    }
    try:
        return load_settings(**overrides)
    except SettingsError as e:
        print(e, file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    import uvicorn

    from gateway.app import build_state, create_app
    from gateway.runtime import build_backend, build_codec, build_inference

    settings = _settings(args)

    async def main() -> None:
        backend = build_backend(settings)  # first: its configuration is checked before anything loads
        codec = await build_codec(settings)
        inference = await build_inference(settings)
        app = create_app(build_state(settings, codec=codec, inference=inference, backend=backend))
        config = uvicorn.Config(
            app, host=settings.host, port=settings.port, log_level="info", access_log=False
        )
        await uvicorn.Server(config).serve()

    from chatforge.artifacts import ArtifactError
    from chatforge.checkpoint import CheckpointError
    from chatforge.tokenizer import TokenizerError
    from gateway.jobs.backend import BackendError

    try:
        asyncio.run(main())
    except (ArtifactError, CheckpointError, TokenizerError, BackendError) as e:  # a setting the user can fix
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _key_store(args: argparse.Namespace) -> Any:
    from chatforge.redisconn import connect
    from gateway.auth import KeyStore

    settings = _settings(args)
    return KeyStore(connect(settings.redis_url or None), settings.key_pepper)


def _keys_create(args: argparse.Namespace) -> int:
    from gateway.auth import KeyRequestError
    from gateway.settings import DEV_PEPPER

    if _settings(args).key_pepper == DEV_PEPPER:
        # A gateway that checks keys refuses the development pepper at start, so a key hashed with
        # it would be rejected by every gateway: print none.
        print(
            "keys create: CHATFORGE_GATEWAY_KEY_PEPPER is not set, and a key made with the development "
            "pepper works on no gateway (a gateway that checks keys refuses that pepper). Set it to "
            "the pepper your gateway uses.",
            file=sys.stderr,
        )
        return 2
    store = _key_store(args)
    if store.pepper_matches() is False:
        print(
            "keys create: CHATFORGE_GATEWAY_KEY_PEPPER is not the pepper the gateway on this Redis "
            "checks keys with, so it would reject the key: set the gateway's pepper.",
            file=sys.stderr,
        )
        return 2
    try:
        key, info = store.create(args.name, args.scope or ["chat"])
    except KeyRequestError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"created key {info.key_id} ({info.name}; scopes {', '.join(info.scopes)})", file=sys.stderr)
    print(key)  # alone on stdout, so `KEY=$(chatforge keys create me)` works
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    for info in _key_store(args).list():
        print(f"{info.key_id}\t{info.name}\t{','.join(info.scopes)}\t{info.created}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    if not _key_store(args).revoke(args.key_id):
        print(f"no key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}", file=sys.stderr)
    return 0
