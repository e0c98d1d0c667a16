"""The tokenizer gRPC server: the servicer plus health checking, reflection, metrics and signals.

`start` builds a running server from Settings (tests and benchmarks use it directly, on port 0);
`serve` is the process's main loop: SIGHUP reloads the tokenizer, SIGTERM/SIGINT shut down
gracefully (health turns NOT_SERVING, in-flight RPCs get `grace_s` to finish).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from chatforge.artifacts import ArtifactStore
from chatforge.v1 import tokenizer_pb2 as pb
from chatforge.v1 import tokenizer_pb2_grpc as pb_grpc
from tokenizer_svc.metrics import MetricsInterceptor, TokenizerMetrics
from tokenizer_svc.servicer import Limits, TokenizerServicer
from tokenizer_svc.settings import Settings
from tokenizer_svc.slot import Loaded, TokenizerSlot
from tokenizer_svc.wire import UndecodableRequests

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TokenizerService"].full_name


class ServerError(RuntimeError):
    """The server cannot start (a port in use, an address that does not bind)."""


class TokenizerServer:
    """A started server: where it listens, and how to reload and stop it."""

    def __init__(self, settings: Settings, store: ArtifactStore | None = None):
        """Load the tokenizer, bind, start serving; raises ArtifactError/TokenizerError/ServerError."""
        self.settings = settings
        store = store or ArtifactStore.from_env(settings.artifacts_root)
        self.metrics = TokenizerMetrics()
        self.servicer = TokenizerServicer(
            TokenizerSlot(store, settings.name),
            Limits(
                settings.max_text_chars,
                settings.max_batch_texts,
                settings.max_ids,
                settings.reload_enabled,
                max_messages=settings.max_conversation_messages,
                max_parts=settings.max_conversation_parts,
                admin_token=settings.admin_token,
                loopback=settings.loopback,
            ),
            self.metrics,
        )
        self._health = health.HealthServicer()
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="tokenizer-rpc"),
            # Metrics outermost, so a request that does not decode is counted with its status.
            interceptors=[MetricsInterceptor(self.metrics), UndecodableRequests()],
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # Linux lets two servers share a port with SO_REUSEPORT, silently splitting traffic
                # with a stale process; a port in use must fail loudly instead.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        pb_grpc.add_TokenizerServiceServicer_to_server(self.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        self.port = self._bind(settings.host, settings.port)
        self._server.start()
        self._metrics_http = None
        self.metrics_port: int | None = None
        if settings.metrics_enabled:
            try:
                self._metrics_http, _ = start_http_server(
                    settings.metrics_port, addr=settings.host, registry=self.metrics.registry
                )
            except OSError as e:
                self._server.stop(None)
                raise ServerError(
                    f"cannot serve metrics on {settings.host}:{settings.metrics_port} ({e}); "
                    "set CHATFORGE_TOKENIZER_METRICS_PORT to a free port (0: any)"
                ) from None
            self.metrics_port = self._metrics_http.server_address[1]
        for service in ("", SERVICE_NAME):
            self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return _host_port(self.settings.host, self.port)

    @property
    def loaded(self) -> Loaded:
        return self.servicer.loaded

    def reload(self, name: str | None = None) -> Loaded:
        return self.servicer.reload(name)

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, drain, refuse new RPCs, let in-flight ones finish within the grace, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()  # every service reports NOT_SERVING from now on
        time.sleep(self.settings.drain_s)
        self._server.stop(self.settings.grace_s if grace_s is None else grace_s).wait()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
        log.info("tokenizer service on %s stopped", self.address)

    def _bind(self, host: str, port: int) -> int:
        try:
            bound = self._server.add_insecure_port(_host_port(host, port))
        except RuntimeError as e:
            bound, reason = 0, str(e)
        else:
            reason = "bind failed"
        if bound == 0:
            raise ServerError(
                f"cannot listen on {_host_port(host, port)} ({reason}); set CHATFORGE_TOKENIZER_PORT "
                "to a free port (0: any) or CHATFORGE_TOKENIZER_HOST to a local address"
            )
        return bound


def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads the tokenizer from the store. Returns an exit code."""
    server = TokenizerServer(settings)
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    signal.signal(signal.SIGTERM, lambda *_: events.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: events.put("stop"))
    signal.signal(signal.SIGHUP, lambda *_: events.put("reload"))
    metrics = f", metrics on {_host_port(settings.host, server.metrics_port)}" if server.metrics_port else ""
    loaded = server.loaded
    log.info(
        "tokenizer service listening on %s%s, serving %r (vocab %d, fingerprint %s)",
        server.address, metrics, loaded.name, loaded.tokenizer.vocab_size, loaded.fingerprint[:12],
    )  # fmt: skip
    while True:
        try:
            # A timeout keeps the main thread waking up, so signal handlers run promptly.
            event = events.get(timeout=1.0)
        except queue.Empty:
            continue
        if event == "stop":
            log.info("shutting down: in-flight RPCs get %.1f s", settings.grace_s)
            server.stop()
            return 0
        try:
            server.reload()
        except Exception as e:  # noqa: BLE001 - a failed SIGHUP reload must not take the server down
            log.error("SIGHUP reload failed, still serving the previous tokenizer: %s", e)


def _host_port(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
