"""The Ray Serve application: a thin shell around the engine.

One replica holds one model and one engine loop (a background task on the replica's event loop).
It streams over HTTP through Serve's proxy (POST /generate, NDJSON lines of stream items) and over
a DeploymentHandle (`handle.options(stream=True).generate.remote(body)`, dicts of the same shape).
Serve calls `check_health`, which fails when the engine loop died or a step hangs; it then restarts
the replica. `switch_checkpoint` (or a new `user_config={"checkpoint": ...}`) loads other weights
in place: the cluster and the replica stay up, in-flight requests on the old model end with an error
event, and new ones go to the new model.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chatforge.artifacts import ArtifactStore
from inference_svc.config import EngineConfig
from inference_svc.engine import AsyncEngine, EngineError, LLMEngine
from inference_svc.loading import LoadedModel, load_model
from inference_svc.metrics import EngineMetrics
from inference_svc.outputs import Event, StreamItem
from inference_svc.protocol import BadRequest, parse_request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeConfig:
    checkpoint: str  # artifact name "run/stage[/step_N]" or a checkpoint directory
    artifacts_root: str | None = None  # default: $CHATFORGE_ARTIFACTS or ./artifacts
    tokenizer: str | None = None  # override the tokenizer named in the checkpoint
    device: str | None = None  # default: cuda when present
    sandbox_url: str | None = None  # the sandbox service for python tool calls; none: tools off
    engine: EngineConfig = field(default_factory=EngineConfig)
    # Serve scales replicas on ongoing requests per replica; one engine batches up to max_num_seqs.
    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: int = 32
    max_ongoing_requests: int = 128
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def autoscaling_config(self) -> dict[str, Any]:
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


class InferenceServer:
    """The replica's class; plain Python so it can also run without Serve."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.store = ArtifactStore.from_env(config.artifacts_root)
        self.metrics = EngineMetrics()  # one registry per replica, kept across checkpoint switches
        self.engine: AsyncEngine | None = None
        self.loaded = self._load(config.checkpoint)

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
    async def generate(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream item dicts for one request; a bad request yields a single error item."""
        async for item in self._stream(body):
            yield item.to_dict()

    async def switch_checkpoint(self, name: str) -> dict[str, Any]:
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

    async def info(self) -> dict[str, Any]:
        engine = self._engine().engine
        return {
            "checkpoint": self.loaded.name,
            "path": str(self.loaded.path),
            "step": self.loaded.meta.get("step"),
            "tokenizer": self.loaded.tokenizer.name if self.loaded.tokenizer else None,
            "config": self.loaded.model.config.to_dict(),
            "kv_cache": {
                "num_blocks": engine.pool.num_blocks,
                "block_size": engine.config.block_size,
                "bytes": engine.cache.nbytes,
                "usage_ratio": engine.pool.usage(),
            },
            "attention": engine.runner.backend.name,
            "engine": asdict(engine.config),
        }

    async def __call__(self, request: Any) -> Any:
        """HTTP: POST /generate (NDJSON stream), GET /info, GET /metrics, GET /healthz."""
        from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

        path = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if request.method == "GET" and path == "metrics":
            return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
        if request.method == "GET" and path == "info":
            return JSONResponse(await self.info())
        if request.method == "GET" and path == "healthz":
            try:
                await self.check_health()
            except Exception as e:
                return PlainTextResponse(str(e), status_code=503)
            return PlainTextResponse("ok")
        if request.method != "POST" or path != "generate":
            return JSONResponse({"error": f"no route {request.method} {request.url.path}"}, status_code=404)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "request body is not valid JSON"}, status_code=400)
        stream = self._stream(body)
        first = await anext(stream)
        if first.event is not None and first.event.kind == "error" and first.event.data.get("status") == 400:
            return JSONResponse({"error": first.event.data["message"]}, status_code=400)

        async def lines() -> AsyncIterator[bytes]:
            yield _line(first)
            async for item in stream:
                yield _line(item)

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    # --- helpers -----------------------------------------------------------------------------------
    async def _stream(self, body: Any) -> AsyncIterator[StreamItem]:
        engine = self._engine()
        loaded = self.loaded
        try:
            prompt, params = parse_request(body, loaded.tokenizer)
            stream = engine.generate(prompt, params)
            first = await anext(stream)  # validation errors surface here, before anything streamed
        except (BadRequest, ValueError) as e:
            yield StreamItem(event=Event("error", {"message": str(e), "status": 400}))
            return
        except EngineError as e:
            yield StreamItem(event=Event("error", {"message": str(e), "status": 503}))
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
        return load_model(name, self.store, device=self.config.device, tokenizer=self.config.tokenizer)


def _line(item: StreamItem) -> bytes:
    return (json.dumps(item.to_dict(), ensure_ascii=False) + "\n").encode()


def build_app(config: ServeConfig) -> Any:
    """The Serve application for `serve.run`; the deployment options come from `config`."""
    from ray import serve

    deployment: Any = serve.deployment(
        InferenceServer,
        name="inference",
        autoscaling_config=config.autoscaling_config(),
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        health_check_period_s=10,
        health_check_timeout_s=30,
        user_config={"checkpoint": config.checkpoint},
    )
    return deployment.bind(config)


def app_builder(args: dict[str, Any]) -> Any:
    """Entry point for Serve config files (KubeRay's RayService `serveConfigV2`):
    `import_path: inference_svc.serve:app_builder` with `args: {checkpoint: run/sft, ...}`."""
    known = {"checkpoint", "artifacts_root", "tokenizer", "device", "sandbox_url", "num_blocks"}
    known |= {"min_replicas", "max_replicas", "target_ongoing_requests", "num_cpus", "num_gpus"}
    unknown = set(args) - known
    if unknown or "checkpoint" not in args:
        raise ValueError(
            f"app args need 'checkpoint' and take only {sorted(known)}; got unknown {sorted(unknown)}"
        )
    ints = {"min_replicas", "max_replicas", "target_ongoing_requests"}
    floats = {"num_cpus", "num_gpus"}
    options: dict[str, Any] = {
        k: int(v) if k in ints else float(v) if k in floats else v
        for k, v in args.items()
        if k != "num_blocks"
    }
    engine = EngineConfig(num_blocks=int(args["num_blocks"]) if args.get("num_blocks") else None)
    return build_app(ServeConfig(engine=engine, **options))
