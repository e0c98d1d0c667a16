"""The app factory: wire the parts from Settings (or take them injected), mount routes and web/.

`build_state` makes every part from Settings: Redis, keys, limits, the tokenizer codec, the
inference client, the job backend. Tests inject their own parts through `create_app(state=...)`:
real ones built differently (an engine on a tiny checkpoint, a tokenizer service on port 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from chatforge.artifacts import ArtifactStore
from chatforge.body_limit import BodyLimit
from chatforge.redisconn import connect
from gateway import errors
from gateway.admission import Admission
from gateway.auth import AuthGate, KeyStore
from gateway.codec import TextCodec
from gateway.conversations import ConversationLimits, ConversationStore
from gateway.inference import InferenceClient
from gateway.instance import GatewayInstance
from gateway.jobs.backend import JobBackend
from gateway.jobs.service import JobEnv, JobService
from gateway.jobs.store import JobStore
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.openapi import document
from gateway.ratelimit import RateLimiter
from gateway.routes import admin, chat, conversations, health, jobs, models, reports
from gateway.settings import Settings
from gateway.state import GatewayState

log = logging.getLogger(__name__)
JOB_POLL_S = 2.0  # how often unfinished jobs are reconciled with the backend


def build_state(
    settings: Settings,
    *,
    codec: TextCodec,
    inference: InferenceClient,
    backend: JobBackend,
    redis: object = None,
) -> GatewayState:
    """The gateway's parts around the given codec, inference client and job backend."""
    redis = redis if redis is not None else connect(settings.redis_url or None)
    store = ArtifactStore.from_env(settings.artifacts_root)
    redis_url = settings.redis_url or _redis_url(redis)
    # This gateway's lease in Redis: what it starts, it follows (gateway/instance.py).
    instance = GatewayInstance(redis)
    return GatewayState(
        settings=settings,
        redis=redis,
        instance=instance,
        store=store,
        keys=KeyStore(redis, settings.key_pepper),
        limiter=RateLimiter(redis),
        admission=Admission(
            settings.max_concurrent_generations, settings.max_queued_generations, settings.queue_timeout_s
        ),
        codec=codec,
        inference=inference,
        jobs=JobService(
            JobStore(redis, ttl_s=settings.job_ttl_s, max_jobs=settings.max_jobs_listed),
            backend,
            command=settings.job_command,
            env=JobEnv(redis_url, str(store.root)),
            artifacts=store,
            instance=instance,
        ),
        conversations=ConversationStore(
            redis,
            ConversationLimits(
                settings.conversation_ttl_s,
                settings.max_conversations_per_key,
                settings.max_conversation_bytes,
                settings.max_conversation_bytes_per_key,
            ),
        ),
        metrics=GatewayMetrics(),
    )


def create_app(state: GatewayState, *, close_parts: bool = True) -> FastAPI:
    """The FastAPI app over `state`; with `close_parts` it closes codec, inference and backend at exit."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not state.settings.auth_required:
            log.warning(
                "API keys are OFF: bound to %s (loopback), every caller is 'local' with chat and admin scopes",
                state.settings.host,
            )
        else:  # so `chatforge keys create` with another pepper refuses to print a key this rejects
            await asyncio.to_thread(state.keys.publish_pepper)
        changed = await asyncio.to_thread(state.jobs.reconcile)
        if changed:
            log.info("reconciled %d job(s) with the %s backend", changed, state.jobs.backend.name)
        watcher = asyncio.create_task(state.jobs.watch(JOB_POLL_S, _set_job_gauges(state)))
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if close_parts:
                await state.inference.close()
                await state.codec.close()
                # Records the jobs that end with this gateway, stops the backend, releases the lease.
                await asyncio.to_thread(state.jobs.close)

    app = FastAPI(
        title="chatforge gateway",
        version="0.1.0",
        description="OpenAI-compatible chat, training jobs, models and deployments.",
        lifespan=lifespan,
    )
    app.state.gateway = state
    errors.install(app)
    modules = (chat, models, conversations, jobs, reports, admin, health)
    for module in modules:
        app.include_router(module.router)
    # The API's own routes, as declared (the gate and the document read their dependencies).
    api_routes = app.state.api_routes = [
        route for module in modules for route in module.router.routes if isinstance(route, APIRoute)
    ]
    web = Path(state.settings.web_dir)
    if (web / "index.html").is_file():
        _serve_web(app, web)
    else:
        log.warning("no web UI at %s (CHATFORGE_GATEWAY_WEB_DIR): serving the API only", web.absolute())
    # Outermost last: metrics see every answer; the gate answers 401/403/429 before any body is
    # read; the body limit counts what the app reads (413 past max_body_bytes, chunked or not).
    app.add_middleware(
        BodyLimit,
        max_bytes=state.settings.max_body_bytes,
        error_body=lambda message: errors.APIError(413, message, code="body_too_large").body(),
    )
    app.add_middleware(AuthGate, routes=api_routes, state=lambda: state)
    app.add_middleware(MetricsMiddleware, metrics=lambda: state.metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, api_routes, state.settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _serve_web(app: FastAPI, web: Path) -> None:
    """The UI at `/`: each top-level folder mounted under its name, each top-level file as a route.

    Not one catch-all mount at `/`: that would also answer API paths (a GET on a POST-only route
    would be the UI's 404 instead of the API's 405).
    """
    for entry in sorted(web.iterdir()):
        if entry.is_dir():
            app.mount(f"/{entry.name}", StaticFiles(directory=entry), name=f"web-{entry.name}")
        elif entry.is_file():
            path = "/" if entry.name == "index.html" else f"/{entry.name}"
            app.add_api_route(path, _file_route(entry), methods=["GET"], include_in_schema=False)


def _file_route(path: Path):  # type: ignore[no-untyped-def]
    def serve() -> FileResponse:
        return FileResponse(path)

    return serve


def _set_job_gauges(state: GatewayState):  # type: ignore[no-untyped-def]
    def set_counts(counts: dict[str, int]) -> None:
        for job_state, n in counts.items():
            state.metrics.jobs.labels(job_state).set(n)

    return set_counts


def _redis_url(redis: object) -> str:
    """The URL a job's processes use to reach the same Redis (a unix socket for the embedded one)."""
    kwargs = getattr(getattr(redis, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return ""
