"""`chatforge chat` (a streaming terminal chat) and `chatforge inference serve` (the Ray Serve app).

`chat` talks to a local checkpoint (artifact name or directory; the engine runs in this process) or
to a running server (`--url`, the Serve app's POST /generate). Each turn is rendered with the chat
template (`chatforge.chat.render_for_completion`) and the reply streams as it is generated; python
tool calls and their output are shown as they happen. Nothing heavy is imported until a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from chatforge.contracts.generate import GenerateRequest, StreamItem
    from chatforge.contracts.sampling import SamplingParams


def add_cli(subparsers: Any) -> None:
    chat = subparsers.add_parser("chat", help="chat in the terminal with a checkpoint or a running server")
    source = chat.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="artifact name (run/stage[/step_N]) or checkpoint directory")
    source.add_argument("--url", help="a running inference server, e.g. http://127.0.0.1:8001")
    chat.add_argument(
        "--artifacts", help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)"
    )
    chat.add_argument("--tokenizer", help="override the tokenizer named in the checkpoint")
    chat.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    chat.add_argument("--sandbox-url", help="sandbox service for python tool calls (default: tools off)")
    chat.add_argument("--system", default="", help="a system message for the whole conversation")
    chat.add_argument("--prompt", help="ask one question, print the answer and exit")
    # Sampling defaults are the contract's (chatforge.contracts.sampling), as for every caller.
    from chatforge.contracts.sampling import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K

    chat.add_argument("--max-tokens", type=int, help=f"tokens per reply (default: {DEFAULT_MAX_TOKENS})")
    chat.add_argument("--temperature", type=float, help=f"0 = greedy (default: {DEFAULT_TEMPERATURE})")
    chat.add_argument(
        "--top-k", type=int, help=f"sample among the k likeliest, 0 = all (default: {DEFAULT_TOP_K})"
    )
    chat.add_argument("--seed", type=int, help="same seed, same replies (default: random)")
    chat.set_defaults(func=run_chat)

    inference = subparsers.add_parser("inference", help="the inference service (Ray Serve)")
    sub = inference.add_subparsers(dest="inference_command", metavar="<command>", required=True)
    serve = sub.add_parser(
        "serve",
        help="serve a checkpoint with Ray Serve until interrupted",
        description="Every flag is also CHATFORGE_INFERENCE_<FLAG> (engine flags CHATFORGE_INFERENCE_ENGINE__<FLAG>); "
        "the flag wins. Defaults: inference_svc.settings.",
    )
    serve.add_argument("--checkpoint", help="artifact name or checkpoint directory")
    serve.add_argument("--artifacts", dest="artifacts_root", help="artifact store root")
    serve.add_argument("--host", help="address Serve's HTTP proxy binds (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="Serve's HTTP port (default 8001; the gateway's is 8000)")
    serve.add_argument("--ray-address", help="join this Ray cluster instead of starting a local one")
    serve.add_argument("--ray-temp-dir", help="local Ray's temp dir (< 60 chars)")
    serve.add_argument("--device", help="cpu or cuda")
    serve.add_argument("--tokenizer", help="override the tokenizer named in the checkpoint")
    serve.add_argument("--sandbox-url", help="sandbox service for python tool calls")
    serve.add_argument("--num-blocks", type=int, help="KV cache blocks (default: sized from memory)")
    serve.add_argument("--max-num-seqs", type=int, help="sequences one replica runs at once")
    serve.add_argument("--min-replicas", type=int)
    serve.add_argument("--max-replicas", type=int)
    serve.add_argument("--num-gpus", type=float, help="GPUs per replica")
    serve.set_defaults(func=run_serve)


# --- chat -------------------------------------------------------------------------------------------


def run_chat(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from chatforge.contracts.sampling import SamplingParams

    flags = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_k": args.top_k}
    try:  # a flag left out takes the contract's default
        sampling = SamplingParams(**{k: v for k, v in {**flags, "seed": args.seed}.items() if v is not None})
    except ValidationError as e:
        first = e.errors()[0]
        print(f"chat: --{str(first['loc'][0]).replace('_', '-')}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        reply = _remote(args.url) if args.url else _local(args)
    except Exception as e:  # a bad checkpoint name, an unreachable server: one clear line, not a trace
        print(f"chat: {e}", file=sys.stderr)
        return 1
    return chat_loop(reply, sampling, system=args.system, prompt=args.prompt, stdin=sys.stdin, out=sys.stdout)


Reply = Callable[["GenerateRequest"], Iterator["StreamItem"]]


def chat_loop(
    reply: Reply, sampling: SamplingParams, *, system: str, prompt: str | None, stdin: TextIO, out: TextIO
) -> int:
    """Read user turns, stream each reply; the conversation (tool calls included) is kept as context."""
    from chatforge.contracts.generate import GenerateRequest

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
        parts, error = _stream_reply(reply(GenerateRequest(messages=messages, sampling=sampling)), out)
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


def _stream_reply(items: Iterator[StreamItem], out: TextIO) -> tuple[list[dict[str, str]], str | None]:
    from chatforge.contracts.generate import ErrorEvent, ToolCallEvent, ToolResultEvent

    parts: list[dict[str, str]] = []
    for item in items:
        if item.text:
            out.write(item.text)
            out.flush()
            if parts and parts[-1]["type"] == "text":
                parts[-1]["text"] += item.text
            else:
                parts.append({"type": "text", "text": item.text})
        event = item.event
        if isinstance(event, ToolCallEvent):
            out.write(f"\n[python] {event.code}\n")
            parts.append({"type": "python", "text": event.code})
        elif isinstance(event, ToolResultEvent):
            out.write(f"[output: {event.outcome}, {event.duration_s:.2f}s] {event.output}\n")
            parts.append({"type": "python_output", "text": event.output})
        elif isinstance(event, ErrorEvent):
            return parts, event.error.message
    return parts, None


def _local(args: argparse.Namespace) -> Reply:
    """The engine in this process, driven synchronously while the reply streams."""
    from chatforge.artifacts import ArtifactStore
    from chatforge.contracts.errors import ServiceError
    from chatforge.contracts.generate import ErrorEvent, StreamItem
    from chatforge.loading import load_model
    from inference_svc.config import EngineConfig
    from inference_svc.driver import EngineDriver
    from inference_svc.engine import LLMEngine
    from inference_svc.protocol import prepare

    loaded = load_model(
        args.checkpoint, ArtifactStore.from_env(args.artifacts), device=args.device, serving=True,
        tokenizer=args.tokenizer,
    )  # fmt: skip
    tools = None
    if args.sandbox_url:
        from chatforge.sandbox_client import SandboxClient

        tools = SandboxClient(args.sandbox_url)
    # A chat needs room for one long conversation, not a big batch: 64 MiB of KV cache at most.
    engine = LLMEngine(
        loaded.model, EngineConfig(kv_cache_bytes=64 * 2**20), tokenizer=loaded.tokenizer, tool_executor=tools
    )
    driver = EngineDriver(engine)

    def reply(request: GenerateRequest) -> Iterator[StreamItem]:
        try:  # the server's path: the chat rendered and ended as the model was trained (protocol.py)
            prompt, sampling = prepare(request, loaded.tokenizer)
            yield from driver.stream(prompt, sampling)
        except ServiceError as e:  # a conversation too long for the model, say: an error item
            yield StreamItem(event=ErrorEvent(error=e.detail))

    return reply


def _remote(url: str) -> Reply:
    import httpx

    from chatforge.contracts.errors import ErrorDetail
    from chatforge.contracts.generate import ErrorEvent, StreamItem

    base = url.rstrip("/")

    def reply(request: GenerateRequest) -> Iterator[StreamItem]:
        body = request.model_dump(mode="json", exclude_unset=True)  # unset sampling: the server's defaults
        with httpx.stream("POST", f"{base}/generate", json=body, timeout=httpx.Timeout(300, connect=5)) as r:
            if r.status_code != 200:
                r.read()
                try:
                    detail = ErrorDetail.model_validate(r.json()["error"])
                except Exception:  # not the service's error body: say what came back
                    raise RuntimeError(f"server answered {r.status_code}: {r.text}") from None
                yield StreamItem(event=ErrorEvent(error=detail))
                return
            for line in r.iter_lines():
                if line:
                    yield StreamItem.from_json(line)

    return reply


# --- serve ------------------------------------------------------------------------------------------


SERVE_FLAGS = (
    "checkpoint", "artifacts_root", "host", "port", "ray_address", "ray_temp_dir", "device", "tokenizer",
    "sandbox_url", "num_blocks", "max_num_seqs", "min_replicas", "max_replicas", "num_gpus",
)  # fmt: skip


def _wait_running(app: str, timeout_s: float = 900.0) -> None:
    """Until the application's every replica has loaded its checkpoint (or it failed)."""
    import time

    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        if status is not None and status.status in ("RUNNING", "DEPLOY_FAILED", "UNHEALTHY"):
            if status.status != "RUNNING":
                raise SystemExit(f"inference serve: the application is {status.status}: {status.message}")
            return
        time.sleep(0.5)
    raise SystemExit(f"inference serve: the application did not start in {timeout_s:.0f} s")


def run_serve(args: argparse.Namespace) -> int:
    import threading

    from inference_svc.settings import SettingsError, load_settings

    try:
        settings = load_settings(**{k: getattr(args, k) for k in SERVE_FLAGS})
    except SettingsError as e:
        print(f"inference serve: {e}", file=sys.stderr)
        return 2
    from chatforge.raylocal import init_local_ray
    from inference_svc.serve import serve_config

    # Deployed from a config through the dashboard's Serve REST API, not with serve.run: an
    # application deployed from code cannot be updated through that API, and the gateway switches
    # checkpoints by writing the config (services/gateway/gateway/deployer.py).
    if settings.ray_address:
        context = init_local_ray(settings.ray_temp_dir, address=settings.ray_address)
    else:
        context = init_local_ray(
            settings.ray_temp_dir, include_dashboard=True, dashboard_host=settings.host,
            dashboard_port=settings.dashboard_port,
        )  # fmt: skip
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    serve.start(http_options={"host": settings.host, "port": settings.port})
    dashboard = f"http://{context.dashboard_url}" if context.dashboard_url else ""
    if dashboard and not settings.ray_address and settings.host not in ("0.0.0.0", "::"):
        # Bound to one address (compose binds it to one network's): Ray reports the node's loopback
        # address, where nothing listens then.
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        dashboard = f"http://{host}:{context.dashboard_url.rsplit(':', 1)[1]}"
    if not dashboard:
        print("inference serve: the Ray cluster has no dashboard to deploy through", file=sys.stderr)
        return 2
    ServeSubmissionClient(dashboard).deploy_applications(serve_config(settings))
    _wait_running(settings.app_name)
    url = f"http://{settings.host}:{settings.port}"
    print(
        f"inference: serving {settings.checkpoint} at {url}/generate; Serve's REST API at {dashboard}",
        flush=True,
    )
    try:
        threading.Event().wait()
    finally:
        serve.shutdown()
    return 0
