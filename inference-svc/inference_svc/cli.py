"""`chatforge chat` (a streaming terminal chat) and `chatforge inference serve` (the Ray Serve app).

`chat` talks to a local checkpoint (artifact name or directory; the engine runs in this process) or
to a running server (`--url`, the Serve app's POST /generate). Each turn is rendered with the chat
template (`chatforge.chat.render_for_completion`) and the reply streams as it is generated; python
tool calls and their output are shown as they happen. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO


def add_cli(subparsers: Any) -> None:
    chat = subparsers.add_parser("chat", help="chat in the terminal with a checkpoint or a running server")
    source = chat.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="artifact name (run/stage[/step_N]) or checkpoint directory")
    source.add_argument("--url", help="a running inference server, e.g. http://127.0.0.1:8000")
    chat.add_argument(
        "--artifacts", help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )
    chat.add_argument("--tokenizer", help="override the tokenizer named in the checkpoint")
    chat.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    chat.add_argument("--sandbox-url", help="sandbox service for python tool calls (default: tools off)")
    chat.add_argument("--system", default="", help="a system message for the whole conversation")
    chat.add_argument("--prompt", help="ask one question, print the answer and exit")
    chat.add_argument("--max-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.6)
    chat.add_argument("--top-k", type=int, default=50)
    chat.add_argument("--seed", type=int)
    chat.set_defaults(func=run_chat)

    inference = subparsers.add_parser("inference", help="the inference service (Ray Serve)")
    sub = inference.add_subparsers(dest="inference_command", metavar="<command>", required=True)
    serve = sub.add_parser("serve", help="serve a checkpoint with Ray Serve until interrupted")
    serve.add_argument("--checkpoint", required=True, help="artifact name or checkpoint directory")
    serve.add_argument("--artifacts", help="artifact store root")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    serve.add_argument(
        "--ray-temp-dir", default="/tmp/chatforge-ray", help="local Ray's temp dir (< 60 chars)"
    )
    serve.add_argument("--device", help="cpu or cuda")
    serve.add_argument("--sandbox-url", help="sandbox service for python tool calls")
    serve.add_argument("--num-blocks", type=int, help="KV cache blocks (default: sized from memory)")
    serve.add_argument("--max-replicas", type=int, default=1)
    serve.set_defaults(func=run_serve)


# --- chat -------------------------------------------------------------------------------------------


def run_chat(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        print("--max-tokens must be >= 1", file=sys.stderr)
        return 2
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k}
    if args.seed is not None:
        sampling["seed"] = args.seed
    try:
        reply = _remote(args.url) if args.url else _local(args)
    except Exception as e:  # a bad checkpoint name, an unreachable server: one clear line, not a trace
        print(f"chat: {e}", file=sys.stderr)
        return 1
    return chat_loop(reply, sampling, system=args.system, prompt=args.prompt, stdin=sys.stdin, out=sys.stdout)


Reply = Callable[[dict[str, Any]], Iterator[dict[str, Any]]]


def chat_loop(
    reply: Reply, sampling: dict[str, Any], *, system: str, prompt: str | None, stdin: TextIO, out: TextIO
) -> int:
    """Read user turns, stream each reply; the conversation (tool calls included) is kept as context."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    interactive = prompt is None and stdin.isatty()
    while True:
        if prompt is not None:
            line = prompt
        else:
            if interactive:
                out.write("\nyou> ")
                out.flush()
            line = stdin.readline()
            if not line:
                return 0
            line = line.strip()
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return 0
            if line == "/clear":
                messages = messages[:1] if system else []
                continue
        messages.append({"role": "user", "content": line})
        if interactive:
            out.write("assistant> ")
        parts, error = _stream_reply(reply({"messages": messages, **sampling}), out)
        out.write("\n")
        out.flush()
        if error:
            print(f"chat: {error}", file=sys.stderr)
            messages.pop()
            if prompt is not None:
                return 1
            continue
        messages.append({"role": "assistant", "content": parts or [{"type": "text", "text": ""}]})
        if prompt is not None:
            return 0


def _stream_reply(items: Iterator[dict[str, Any]], out: TextIO) -> tuple[list[dict[str, str]], str | None]:
    parts: list[dict[str, str]] = []
    for item in items:
        if item.get("text"):
            out.write(item["text"])
            out.flush()
            if parts and parts[-1]["type"] == "text":
                parts[-1]["text"] += item["text"]
            else:
                parts.append({"type": "text", "text": item["text"]})
        event = item.get("event")
        if not event:
            continue
        data = event.get("data", {})
        if event["kind"] == "tool_call":
            out.write(f"\n[python] {data['code']}\n")
            parts.append({"type": "python", "text": data["code"]})
        elif event["kind"] == "tool_result":
            out.write(f"[output: {data['outcome']}, {data['duration_s']:.2f}s] {data['output']}\n")
            parts.append({"type": "python_output", "text": data["output"]})
        elif event["kind"] == "error":
            return parts, data.get("message", "error")
    return parts, None


def _local(args: argparse.Namespace) -> Reply:
    """The engine in this process, stepped synchronously while the reply streams."""
    from chatforge.artifacts import ArtifactStore
    from inference_svc.config import EngineConfig
    from inference_svc.engine import LLMEngine
    from inference_svc.loading import load_model
    from inference_svc.protocol import parse_request

    loaded = load_model(
        args.checkpoint, ArtifactStore.from_env(args.artifacts), device=args.device, tokenizer=args.tokenizer
    )
    if loaded.tokenizer is None:
        raise ValueError(f"checkpoint {args.checkpoint!r} names no tokenizer: pass --tokenizer")
    tools = None
    if args.sandbox_url:
        from chatforge.sandbox_client import SandboxClient

        tools = SandboxClient(args.sandbox_url)
    # A chat needs room for one long conversation, not a big batch: 64 MiB of KV cache at most.
    engine = LLMEngine(
        loaded.model, EngineConfig(kv_cache_bytes=64 * 2**20), tokenizer=loaded.tokenizer, tool_executor=tools
    )

    def reply(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        prompt, params = parse_request(body, loaded.tokenizer)
        request_id = engine.add_request(prompt, params)
        done = False
        try:
            while not done:
                items = engine.step().get(request_id, [])
                for item in items:
                    done = done or item.is_last
                    yield item.to_dict()
                if not items:
                    time.sleep(0.002)  # only a tool call in flight: wait for it without spinning
        finally:
            if not done:
                engine.abort(request_id)

    return reply


def _remote(url: str) -> Reply:
    import httpx

    base = url.rstrip("/")

    def reply(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with httpx.stream("POST", f"{base}/generate", json=body, timeout=httpx.Timeout(300, connect=5)) as r:
            if r.status_code != 200:
                r.read()
                raise RuntimeError(f"server answered {r.status_code}: {r.text}")
            for line in r.iter_lines():
                if line:
                    yield json.loads(line)

    return reply


# --- serve ------------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    import threading

    from chatforge.raylocal import init_local_ray
    from inference_svc.config import EngineConfig
    from inference_svc.serve import ServeConfig, build_app

    config = ServeConfig(
        checkpoint=args.checkpoint,
        artifacts_root=args.artifacts,
        device=args.device,
        sandbox_url=args.sandbox_url,
        engine=EngineConfig(num_blocks=args.num_blocks),
        max_replicas=args.max_replicas,
    )
    init_local_ray(args.ray_temp_dir, address=args.ray_address)
    from ray import serve

    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(config), name="inference", route_prefix="/")
    print(f"inference: serving {args.checkpoint} at http://{args.host}:{args.port}/generate", flush=True)
    try:
        threading.Event().wait()
    finally:
        serve.shutdown()
    return 0
