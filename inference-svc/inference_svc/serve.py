"""The Ray Serve application: a thin shell around the engine.

One replica holds one model and one engine loop (a background task on the replica's event loop).
It streams over HTTP through Serve's proxy (POST /generate, NDJSON lines of stream items) and over
a DeploymentHandle (`handle.options(stream=True).generate.remote(request)`, the same items as
objects). Both carry `chatforge.contracts.generate`'s messages.
Serve calls `check_health`, which fails when the engine loop died or a step hangs; it then restarts
the replica. `switch_checkpoint` (or a new `user_config={"checkpoint": ...}`) loads other weights
in place: the cluster and the replica stay up, in-flight requests on the old model end with an error
event, and new ones go to the new model.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from chatforge.artifacts import ArtifactStore
from chatforge.contracts.errors import ErrorDetail, ErrorKind, ServiceError, detail_from_validation
from chatforge.contracts.generate import ErrorEvent, GenerateRequest, ServedModelInfo, StreamItem
from chatforge.loading import LoadedModel, load_model
from inference_svc.engine import AsyncEngine, EngineError, LLMEngine
from inference_svc.metrics import EngineMetrics
from inference_svc.protocol import prepare
from inference_svc.settings import Settings, load_settings

log = logging.getLogger(__name__)


class InferenceServer:
    """The replica's class; plain Python so it can also run without Serve."""

    def __init__(self, settings: Settings):
        self.config = settings
        self.store = ArtifactStore.from_env(settings.artifacts_root)
        # One registry per replica, kept across checkpoint switches; in a Serve replica also
        # recorded through Ray's metrics, which export every replica's (inference_svc/metrics.py).
        self.metrics = EngineMetrics(ray_serve=_in_serve_replica())
        self.engine: AsyncEngine | None = None
        self.loaded = self._load(settings.checkpoint)

    # --- Serve hooks -------------------------------------------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Serve's in-place update: `{"checkpoint": name}` switches the weights."""
        name = user_config.get("checkpoint")
        if name and name != self.loaded.name:
            await self.switch_checkpoint(name)

    async def check_health(self) -> None:
        if self.engine is not None:  # not started yet = no traffic so far: healthy
            self.engine.check_health()

    # --- API ---------------------------------------------------------------------------------------
    async def generate(self, request: GenerateRequest | dict[str, Any]) -> AsyncIterator[StreamItem]:
        """Stream the items of one request; a bad request yields a single error item."""
        async for item in self._stream(request):
            yield item

    async def switch_checkpoint(self, name: str) -> ServedModelInfo:
        """Load other weights without restarting anything; returns the new model's info.

        The new checkpoint is loaded before the old engine stops, so a bad name leaves the server
        serving what it served; requests in flight on the old model end with an error event.
        """
        loaded = await asyncio.get_running_loop().run_in_executor(None, self._load, name)
        old, self.engine = self.engine, None
        if old is not None:
            await old.stop(f"the server switched to checkpoint {name!r}")
        self.loaded = loaded
        del old
        gc.collect()  # the old KV cache must be gone before the new one is sized from free memory
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return await self.info()

    async def info(self) -> ServedModelInfo:
        engine = self._engine().engine
        loaded = self.loaded
        return ServedModelInfo(
            checkpoint=_artifact_name(loaded.path, loaded.name),
            path=str(loaded.path),
            step=loaded.meta.get("step"),
            tokenizer=loaded.tokenizer.name if loaded.tokenizer else None,
            context_length=engine.max_model_len,
            config=loaded.model.config.to_dict(),
            attention=engine.runner.backend.name,
            kv_cache={
                "num_blocks": engine.pool.num_blocks,
                "block_size": engine.config.block_size,
                "bytes": engine.cache.nbytes,
                "usage_ratio": engine.pool.usage(),
            },
            engine=engine.config.model_dump(),
        )

    async def __call__(self, request: Any) -> Any:
        """HTTP: POST /generate (NDJSON stream), GET /info, GET /metrics, GET /healthz."""
        from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

        path = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if request.method == "GET" and path == "metrics":
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
        if request.method == "GET" and path == "info":
            return JSONResponse((await self.info()).model_dump(mode="json"))
        if request.method == "GET" and path == "healthz":
            try:
                await self.check_health()
            except Exception as e:
                return PlainTextResponse(str(e), status_code=503)
            return PlainTextResponse("ok")
        if request.method != "POST" or path != "generate":
            detail = ErrorDetail(
                kind=ErrorKind.INVALID_REQUEST, message=f"no route {request.method} {request.url.path}"
            )
            return JSONResponse({"error": detail.model_dump(mode="json")}, status_code=404)
        try:
            body = GenerateRequest.model_validate_json(await request.body())
        except ValidationError as e:
            return _error_response(detail_from_validation(e))
        stream = self._stream(body)
        first = await anext(stream)
        if isinstance(first.event, ErrorEvent):  # refused before anything streamed: a status, not a stream
            return _error_response(first.event.error)

        async def lines() -> AsyncIterator[bytes]:
            yield _line(first)
            async for item in stream:
                yield _line(item)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    # --- helpers -----------------------------------------------------------------------------------
    async def _stream(self, body: GenerateRequest | dict[str, Any]) -> AsyncIterator[StreamItem]:
        engine = self._engine()
        loaded = self.loaded
        try:
            request = body if isinstance(body, GenerateRequest) else GenerateRequest.model_validate(body)
            prompt, sampling = prepare(request, loaded.tokenizer)
            stream = engine.generate(prompt, sampling)
            first = await anext(stream)  # validation errors surface here, before anything streamed
        except ValidationError as e:
            yield StreamItem(event=ErrorEvent(error=detail_from_validation(e)))
            return
        except ServiceError as e:
            yield StreamItem(event=ErrorEvent(error=e.detail))
            return
        except ValueError as e:  # the engine's own input checks (an id outside the vocabulary)
            yield StreamItem(event=ErrorEvent(error=ServiceError.invalid(str(e), param="prompt_ids").detail))
            return
        except EngineError as e:
            yield StreamItem(event=ErrorEvent(error=ServiceError.unavailable(str(e)).detail))
            return
        yield first
        async for item in stream:
            yield item

    def _engine(self) -> AsyncEngine:
        """The engine, started on first use (Serve constructs replicas outside their event loop)."""
        if self.engine is None:
            tools = None
            if self.config.sandbox_url and self.loaded.tokenizer is not None:
                from chatforge.sandbox_client import SandboxClient

                tools = SandboxClient(self.config.sandbox_url)
            llm = LLMEngine(
                self.loaded.model,
                self.config.engine,
                tokenizer=self.loaded.tokenizer,
                tool_executor=tools,
                metrics=self.metrics,
            )
            self.engine = AsyncEngine(llm)
            self.engine.start()
        return self.engine

    def _load(self, name: str) -> LoadedModel:
        return load_model(
            name, self.store, device=self.config.device, serving=True, tokenizer=self.config.tokenizer,
            need_tokenizer=False,
        )  # fmt: skip


def _in_serve_replica() -> bool:
    try:
        from ray import serve

        serve.get_replica_context()
    except Exception:  # no Ray, or not inside a replica (tests, the gateway's local mode)
        return False
    return True


def _line(item: StreamItem) -> bytes:
    return (item.to_json() + "\n").encode()


def _error_response(detail: ErrorDetail) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(
        {"error": detail.model_dump(mode="json", exclude_none=True)}, status_code=detail.http_status
    )


def _artifact_name(path: Path, asked: str) -> str:
    """`run/stage/step_N` from the checkpoint's directory (…/runs/<run>/<stage>/<step>)."""
    parts = path.parts
    return "/".join(parts[-3:]) if len(parts) >= 4 and parts[-4] == "runs" else asked


def build_app(settings: Settings) -> Any:
    """The Serve application for `serve.run`; the deployment options come from `settings`."""
    from ray import serve

    deployment: Any = serve.deployment(
        InferenceServer,
        name=settings.app_name,
        autoscaling_config=settings.autoscaling_config(),
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
        user_config={"checkpoint": settings.checkpoint},
    )
    return deployment.bind(settings)


# Settings that say where this process listens or which Ray it joins: not the replicas' business.
_NOT_APP_ARGS = {"host", "port", "ray_address", "ray_temp_dir", "dashboard_port"}


def serve_config(settings: Settings) -> dict[str, Any]:
    """The Serve config (ServeDeploySchema) of this application, for Serve's REST API: the same
    `app_builder` and settings a RayService's serveConfigV2 names, and the checkpoint in the
    deployment's user_config, which the gateway rewrites to switch every replica."""
    args = settings.model_dump(mode="json", exclude=_NOT_APP_ARGS, exclude_none=True)
    return {
        "applications": [
            {
                "name": settings.app_name,
                "import_path": "inference_svc.serve:app_builder",
                "route_prefix": "/",
                "args": args,
                "deployments": [
                    {"name": settings.app_name, "user_config": {"checkpoint": settings.checkpoint}}
                ],
            }
        ],
    }


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for Serve config files (KubeRay's RayService `serveConfigV2`):
    `import_path: inference_svc.serve:app_builder` with `args: {checkpoint: run/sft, ...}`; the args
    are the service's settings (engine fields flat or under `engine`), validated like the CLI's."""
    return build_app(load_settings(**dict(args)))
