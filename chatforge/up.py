"""`chatforge up`, `down` and `status`: the whole stack on one machine, as it is deployed.

`up` starts, each bound to 127.0.0.1 and each as its own process: Redis (embedded unless
`REDIS_URL`), a Ray head (`chatforge.raylocal.start_head`), the tokenizer service (gRPC), the
sandbox service, the inference service on Ray Serve (on that head) serving the newest checkpoint
or `--checkpoint`, and the gateway in its remote mode (tokenizer over gRPC, inference over HTTP to
Serve, deployments through the Serve handle, jobs through the head's Jobs API) with the web UI. It
waits for each to answer its health check, prints one table of URLs, and stays in the foreground.

Every process is started by `up` through `chatforge.lifetime.spawn_owned`: its own session under a
parent-death signal, so it ends when `up` ends, however `up` ends (docs/architecture.md, "Nothing
orphaned"). Ctrl-C (or SIGTERM, which `down` sends from another shell) stops them in reverse order
and sweeps each session. `<state dir>/up.json` names `up` and every service (`ProcessRef`s and
URLs), for `down` and `status`; `down` ends whatever a killed `up` left behind through it.

What the user can fix is checked before anything starts, and is one line: a taken port, a missing
checkpoint or tokenizer, a stack already running from the same state directory.

Keys: the gateway binds 127.0.0.1, where its default (`auth=auto`) checks no API key, as in its
local mode; the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatforge.artifacts import ArtifactError, ArtifactStore
from chatforge.lifetime import ProcessRef, kill_session, spawn_owned
from chatforge.raylocal import free_port

HOST = "127.0.0.1"
STATE_FILE = "up.json"
DEFAULT_STATE_DIR = "runs/up"
CHAT_STAGES = ("rl", "sft", "mid")  # checkpoints that chat, preferred over base ones
READY_TIMEOUT_S = 300.0  # a loaded 2-core machine: Ray's head and a Serve replica take a while
STOP_TIMEOUT_S = 60.0
# Default ports: the services' own defaults (docs/architecture.md), the Ray dashboard's usual one.
PORTS: dict[str, int] = {
    "gateway": 8000,
    "inference": 8001,
    "tokenizer": 50051,
    "tokenizer_metrics": 9464,
    "sandbox": 8092,
    "ray_dashboard": 8265,
}
REPO_WEB = Path(__file__).resolve().parents[1] / "web"


class UpError(RuntimeError):
    """Something the user can fix before the stack starts; the message is the one line to print."""


def add_cli(subparsers: Any) -> None:
    up = subparsers.add_parser(
        "up",
        help="start the whole stack on this machine (127.0.0.1) and print its URLs",
        description="Redis, Ray, the tokenizer, sandbox and inference services and the gateway with "
        "the web UI, each a process bound to 127.0.0.1; Ctrl-C or `chatforge down` stops them all.",
    )
    up.add_argument("--checkpoint", help="run/stage[/step_N] to serve (default: the newest trained one)")
    up.add_argument("--artifacts", help="artifact store root (default: $CHATFORGE_ARTIFACTS or ./artifacts)")
    _state_flag(up)
    for name, port in PORTS.items():
        flag = "--" + name.replace("_", "-") + "-port"
        up.add_argument(flag, dest=f"{name}_port", type=int, default=port, help=f"(default {port})")
    up.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
    up.add_argument("--ray-cpus", type=int, help="CPUs the Ray head offers (default: max(4, cores))")
    up.set_defaults(func=_cli_up)

    down = subparsers.add_parser("down", help="stop the stack `chatforge up` started")
    _state_flag(down)
    down.set_defaults(func=_cli_down)

    status = subparsers.add_parser("status", help="each service of the running stack and its health")
    _state_flag(status)
    status.set_defaults(func=_cli_status)


def _state_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"state, logs, embedded Redis (default {DEFAULT_STATE_DIR})",
    )


# --- the plan: everything checked before anything starts ---------------------------------------------


@dataclass(frozen=True)
class Plan:
    state_dir: Path
    store: ArtifactStore
    checkpoint: str
    tokenizer: str
    ports: dict[str, int]
    redis_url: str  # empty: the embedded one
    ray_cpus: int


def plan(args: argparse.Namespace) -> Plan:
    """Validate what `up` was asked: the checkpoint and its tokenizer, the ports, no stack running."""
    state_dir = Path(args.state_dir).absolute()
    running = read_state(state_dir)
    if running is not None and ProcessRef.from_dict(running["up"]).running():
        raise UpError(
            f"a stack is already running from {state_dir} (pid {running['up']['pid']}, chat at "
            f"{running['urls']['chat']}): `chatforge down --state-dir {args.state_dir}` stops it"
        )
    store = ArtifactStore.from_env(args.artifacts)
    checkpoint = args.checkpoint or newest_checkpoint(store)
    try:
        path = store.resolve_checkpoint(checkpoint)
    except ArtifactError as e:
        raise UpError(f"{e}: train one (`make demo`) or name another with --checkpoint") from None
    from chatforge.checkpoint import read_meta

    tokenizer = str(read_meta(path).get("tokenizer") or "")
    if not tokenizer or not store.tokenizer_path(tokenizer).is_file():
        raise UpError(f"checkpoint {checkpoint} names tokenizer {tokenizer!r}, which is not in {store.root}")
    ports = {name: getattr(args, f"{name}_port") for name in PORTS}
    if args.free_ports:
        ports = {name: free_port() for name in PORTS}
    check_ports(ports)
    return Plan(
        state_dir, store, checkpoint, tokenizer, ports, os.environ.get("REDIS_URL", ""),
        args.ray_cpus or max(4, os.cpu_count() or 1),
    )  # fmt: skip


def newest_checkpoint(store: ArtifactStore) -> str:
    """The most recently written checkpoint (`run/stage/step_N`), a chat stage's when there is one."""
    found = store.checkpoints()
    if not found:
        raise UpError(
            f"no trained checkpoint in {store.root}: train one (`make demo` trains the tiny pipeline) "
            "or point --artifacts at a store that has one"
        )
    chat = [(name, path) for name, path in found if name.split("/")[1] in CHAT_STAGES]
    name, _ = max(chat or found, key=lambda item: (item[1] / "meta.json").stat().st_mtime)
    run, stage, _step = name.split("/")
    return f"{run}/{stage}"  # its latest step: the name the models page shows


def check_ports(ports: dict[str, int]) -> None:
    """Every port free on 127.0.0.1, and no two the same; else the first problem, as one line."""
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise UpError(
                f"--{_flag(name)}-port {port} is also --{_flag(seen[port])}-port: give each its own"
            )
        seen[port] = name
        with socket.socket() as s:
            # as the services bind: a port whose last connections linger in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((HOST, port))
            except OSError:
                raise UpError(
                    f"port {port} ({name.replace('_', ' ')}) is taken on {HOST}: stop what uses it, "
                    f"or pass --{_flag(name)}-port (or --free-ports)"
                ) from None


def _flag(name: str) -> str:
    return name.replace("_", "-")


# --- up -------------------------------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes] | None  # None: not ours (an external Redis)
    url: str
    metrics: str = ""
    log: str = ""
    ref: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"url": self.url, "metrics": self.metrics, "log": self.log, "process": self.ref}


class Stack:
    """The services `up` started, in start order; `stop` ends them in reverse."""

    def __init__(self, p: Plan, out: Callable[[str], None]):
        self.plan, self.out = p, out
        self.services: list[Service] = []
        self.redis: Any = None
        self.head: Any = None
        self.ray_temp = ""
        self.logs = p.state_dir / "logs"

    # start ------------------------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        p, port = self.plan, self.plan.ports
        self.logs.mkdir(parents=True, exist_ok=True)
        self._write_state(ready=False)
        redis_url = p.redis_url or self._embedded_redis()
        env = {**os.environ, "CHATFORGE_ARTIFACTS": str(p.store.root), "REDIS_URL": redis_url}
        from chatforge.raylocal import loopback_env, start_head

        env.update(loopback_env())
        # `ray start` turns Ray's token authentication on by default (the token in ~/.ray/auth_token),
        # but a process that joins the cluster by address sends the token only in token mode: the
        # inference service and the gateway's deployments would be refused. One mode for all.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        env.setdefault("RAY_AUTH_MODE", os.environ["RAY_AUTH_MODE"])
        self.out("starting Ray (head on 127.0.0.1) ...")
        self.ray_temp = tempfile.mkdtemp(prefix="cf-up-ray-", dir="/tmp")  # Ray's socket paths are short
        self.head = start_head(
            self.ray_temp,
            num_cpus=p.ray_cpus,
            dashboard_port=port["ray_dashboard"],
            timeout_s=READY_TIMEOUT_S,
        )
        ref = ProcessRef.of(self.head.process.pid)
        self.services.append(Service("ray", None, self.head.dashboard_url, ref=ref.to_dict() if ref else {}))
        self._write_state(ready=False)

        cli = [sys.executable, "-m", "chatforge.cli"]
        self._spawn(
            "tokenizer",
            [*cli, "serve-tokenizer", "--name", p.tokenizer, "--artifacts", str(p.store.root), "--host", HOST,
             "--port", str(port["tokenizer"]), "--metrics-port", str(port["tokenizer_metrics"])],
            env, url=f"{HOST}:{port['tokenizer']}", metrics=f"http://{HOST}:{port['tokenizer_metrics']}/metrics",
        )  # fmt: skip
        sandbox_url = f"http://{HOST}:{port['sandbox']}"
        self._spawn(
            "sandbox", [*cli, "sandbox", "serve", "--host", HOST, "--port", str(port["sandbox"])], env,
            url=sandbox_url, metrics=f"{sandbox_url}/metrics",
        )  # fmt: skip
        inference_url = f"http://{HOST}:{port['inference']}"
        self._spawn(
            "inference",
            [*cli, "inference", "serve", "--checkpoint", p.checkpoint, "--artifacts", str(p.store.root),
             "--host", HOST, "--port", str(port["inference"]), "--ray-address", self.head.gcs_address,
             "--sandbox-url", sandbox_url],
            env, url=inference_url, metrics=f"{inference_url}/metrics",
        )  # fmt: skip
        gateway_url = f"http://{HOST}:{port['gateway']}"
        gateway_env = {
            **env,
            "CHATFORGE_GATEWAY_TOKENIZER_TARGET": f"{HOST}:{port['tokenizer']}",
            "CHATFORGE_GATEWAY_INFERENCE_URL": inference_url,
            "CHATFORGE_GATEWAY_SERVE_ADMIN_URL": self.head.dashboard_url,  # deployments: Serve's REST API
            # the jobs' command, whatever PATH holds: this interpreter's chatforge
            "CHATFORGE_GATEWAY_JOB_COMMAND": f"{sys.executable} -m chatforge.cli train",
        }
        if REPO_WEB.is_dir():
            gateway_env.setdefault("CHATFORGE_GATEWAY_WEB_DIR", str(REPO_WEB))
        self._spawn(
            "gateway",
            [*cli, "gateway", "serve", "--mode", "remote", "--host", HOST, "--port", str(port["gateway"]),
             "--job-backend", "local", "--ray-address", self.head.dashboard_url],
            gateway_env, url=gateway_url, metrics=f"{gateway_url}/metrics",
        )  # fmt: skip
        for service in self.services:
            self._wait_ready(service)
        urls = self.urls()
        self._write_state(ready=True)
        return urls

    def _embedded_redis(self) -> str:
        from chatforge.redisconn import EmbeddedRedis

        self.out("starting Redis (embedded) ...")
        self.redis = EmbeddedRedis.start(self.plan.state_dir / "redis")
        self.services.append(Service("redis", None, self.redis.url, ref=self.redis.server.to_dict()))
        return str(self.redis.url)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], *, url: str, metrics: str) -> None:
        self.out(f"starting {name} ...")
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            process = spawn_owned(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.plan.state_dir,
            )  # fmt: skip
        ref = ProcessRef.of(process.pid)
        self.services.append(Service(name, process, url, metrics, str(log), ref.to_dict() if ref else {}))
        self._write_state(ready=False)

    def _wait_ready(self, service: Service) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            problem = health(service.name, service.url)
            if problem is None:
                self.out(f"  {service.name}: ready")
                return
            if service.process is not None and service.process.poll() is not None:
                raise UpError(
                    f"{service.name} exited with status {service.process.returncode} at start; "
                    f"its log: {service.log}\n{_tail(service.log)}"
                )
            if time.monotonic() > deadline:
                raise UpError(
                    f"{service.name} was not ready after {READY_TIMEOUT_S:.0f} s ({problem}); log: {service.log}"
                )
            time.sleep(0.5)

    def dead(self) -> Service | None:
        """A started service whose process has exited, if any."""
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                return service
        if self.head is not None and self.head.process.poll() is not None:
            return next(s for s in self.services if s.name == "ray")
        return None

    def urls(self) -> dict[str, str]:
        by = {s.name: s for s in self.services}
        urls = {
            "chat": by["gateway"].url + "/",
            "api": by["gateway"].url + "/v1",
            "ray_dashboard": by["ray"].url,
        }
        for s in self.services:
            if s.metrics:
                urls[f"{s.name}_metrics"] = s.metrics
        return urls

    # stop -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Each service in reverse start order: SIGTERM, then its whole session; Ray's head and the
        embedded Redis last but one and last (the services use them until they stop)."""
        for service in reversed(self.services):
            if service.process is not None:
                self.out(f"stopping {service.name} ...")
                stop_session(service.process.pid, service.process)
        if self.head is not None:
            self.out("stopping ray ...")
            self.head.stop()
        if self.ray_temp:
            shutil.rmtree(self.ray_temp, ignore_errors=True)
        if self.redis is not None:
            self.out("stopping redis ...")
            self.redis.stop()
        (self.plan.state_dir / STATE_FILE).unlink(missing_ok=True)

    def _write_state(self, *, ready: bool) -> None:
        urls = self.urls() if ready else {"chat": f"http://{HOST}:{self.plan.ports['gateway']}/"}
        state = {
            "up": ProcessRef.current().to_dict(),
            "ready": ready,
            "checkpoint": self.plan.checkpoint,
            "artifacts": str(self.plan.store.root),
            "ray_temp": self.ray_temp,
            "urls": urls,
            "services": {s.name: s.record() for s in self.services},
        }
        path = self.plan.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def stop_session(pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM a session leader, wait for it, then end whatever is left in its session."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if process is not None:
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    kill_session(pid, grace_s=10.0)


def run_up(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    _quiet_http_log()
    try:
        p = plan(args)
    except UpError as e:
        print(f"chatforge up: {e}", file=sys.stderr)
        return 2
    p.state_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(p, out)
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    # Ctrl-C, also when started where SIGINT is ignored (a shell's background job)
    previous_int = signal.signal(signal.SIGINT, on_signal)
    try:
        urls = stack.start()
        out(table(urls, p))
        sys.stdout.flush()
        while not stopping.is_set():
            dead = stack.dead()
            if dead is not None:
                print(
                    f"chatforge up: {dead.name} exited; stopping everything (log: {dead.log})",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
        return 0
    except UpError as e:
        print(f"chatforge up: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # a second Ctrl-C (or `down`) must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)
        out("stopped")


def table(urls: dict[str, str], p: Plan) -> str:
    rows = [
        ("chat (web UI)", urls["chat"]),
        ("API (OpenAI-compatible)", urls["api"]),
        ("Ray dashboard", urls["ray_dashboard"]),
        *((f"metrics: {k.removesuffix('_metrics')}", v) for k, v in urls.items() if k.endswith("_metrics")),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"chatforge is up, serving {p.checkpoint} (artifacts: {p.store.root})", ""]
    lines += [f"  {name:<{width}}  {url}" for name, url in rows]
    lines += [
        "",
        f"  API key: none needed: the gateway binds {HOST}, where it checks no key (any value works with",
        f"  the openai SDK: base_url={urls['api']}). Logs: {p.state_dir / 'logs'}",
        "  Stop: Ctrl-C here, or `chatforge down" + _state_arg(p) + "` from another shell.",
    ]
    return "\n".join(lines)


def _state_arg(p: Plan) -> str:
    default = Path(DEFAULT_STATE_DIR).absolute()
    return "" if p.state_dir == default else f" --state-dir {p.state_dir}"


# --- down and status -----------------------------------------------------------------------------------


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "up" in data else None


def run_down(state_dir: Path, out: Callable[[str], None] = print) -> int:
    """SIGTERM the `up` process (it stops its services); then end whatever it left behind."""
    state = read_state(state_dir)
    if state is None:
        out(f"chatforge down: nothing to stop (no {state_dir / STATE_FILE})")
        return 0
    up = ProcessRef.from_dict(state["up"])
    if up.running():
        out(f"stopping the stack of pid {up.pid} ...")
        os.kill(up.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3 * STOP_TIMEOUT_S
        while up.running() and time.monotonic() < deadline:
            time.sleep(0.2)
    left = []
    for name, service in state.get("services", {}).items():
        if not service.get("process"):
            continue
        ref = ProcessRef.from_dict(service["process"])
        if ref.running():  # `up` was killed before it could stop it (its death signal should have)
            left.append(name)
            stop_session(ref.pid)
    if up.running():
        stop_session(up.pid)
    if state.get("ray_temp"):
        shutil.rmtree(state["ray_temp"], ignore_errors=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    out("stopped" + (f" (ended leftovers: {', '.join(left)})" if left else ""))
    return 0


def run_status(state_dir: Path, out: Callable[[str], None] = print) -> int:
    """Each service with its URL and health; 0 when all are healthy, 1 otherwise (3: not running)."""
    state = read_state(state_dir)
    if state is None or not ProcessRef.from_dict(state["up"]).running():
        out(f"chatforge status: not running (no live stack in {state_dir})")
        return 3
    rows = []
    healthy = True
    for name, service in state.get("services", {}).items():
        problem = health(name, service["url"])
        healthy &= problem is None
        rows.append((name, service["url"], "ok" if problem is None else f"failing: {problem}"))
    width = max(len(r[0]) for r in rows)
    url_width = max(len(r[1]) for r in rows)
    out(f"serving {state['checkpoint']}; chat at {state['urls']['chat']}")
    for name, url, verdict in rows:
        out(f"  {name:<{width}}  {url:<{url_width}}  {verdict}")
    return 0 if healthy and state.get("ready") else 1


def health(name: str, url: str) -> str | None:
    """None when the service answers its health check, else what is wrong (short)."""
    import httpx

    try:
        if name == "redis":
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
            return None
        if name == "tokenizer":
            return _grpc_health(url)
        path = {"gateway": "/readyz", "ray": "/api/version"}.get(name, "/healthz")
        r = httpx.get(url + path, timeout=3.0, trust_env=False)
        if name == "ray" and r.status_code == 401:  # token authentication on: it answers
            return None
        return None if r.status_code == 200 else f"HTTP {r.status_code} {r.text[:120]}"
    except Exception as e:  # noqa: BLE001 - any failure is "not healthy", said in one line
        return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


def _grpc_health(target: str) -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3.0)
    return None if answer.status == health_pb2.HealthCheckResponse.SERVING else "NOT_SERVING"


def _quiet_http_log() -> None:
    """httpx logs every request at INFO; the health polls would drown the table."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the commands ---------------------------------------------------------------------------------------


def _cli_up(args: argparse.Namespace) -> int:
    return run_up(args, out=lambda line: print(line, flush=True))


def _cli_down(args: argparse.Namespace) -> int:
    return run_down(Path(args.state_dir).absolute())


def _cli_status(args: argparse.Namespace) -> int:
    _quiet_http_log()
    return run_status(Path(args.state_dir).absolute())
