"""The inference service in the gateway's own process: the one-machine path, and the tests' path.

Wraps `inference_svc.serve.InferenceServer`, the very class the Ray Serve replica runs (the real
engine: paged KV cache, continuous batching, tool loop), without Ray. Imports torch, so it is
imported only in local mode; the gateway image uses `RemoteInference`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from gateway.inference import (
    GenerationParams,
    InferenceRejected,
    InferenceUnavailable,
    ModelInfo,
    Piece,
    generate_body,
    piece_from_item,
)


class LocalInference:
    def __init__(
        self, *, model_id: str, artifacts_root: str, engine_config: Any = None, sandbox_url: str = ""
    ):
        self.model_id = model_id
        self.artifacts_root = artifacts_root
        self.engine_config = engine_config
        self.sandbox_url = sandbox_url
        self._server: Any = None
        self._info: ModelInfo | None = None
        self._lock = asyncio.Lock()

    def model_info(self) -> ModelInfo:
        if self._info is None:
            raise InferenceUnavailable("no model is deployed: POST /v1/deployments with a checkpoint")
        return self._info

    async def deploy(self, checkpoint: str) -> ModelInfo:
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.to_thread(self._new_server, checkpoint)
            else:
                await self._server.switch_checkpoint(checkpoint)
            self._info = await self._read_info()
            return self._info

    async def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Piece]:
        if self._server is None:
            raise InferenceUnavailable("no model is deployed: POST /v1/deployments with a checkpoint")
        stream = self._server.generate(generate_body(prompt_ids, params))
        try:
            first = piece_from_item(await anext(stream))
            if first.event == "error" and first.data.get("status") in (400, 503):
                error = InferenceRejected if first.data["status"] == 400 else InferenceUnavailable
                raise error(first.data.get("message", "refused"))
            yield first
            async for item in stream:
                yield piece_from_item(item)
        finally:
            await stream.aclose()  # the engine aborts the request when its stream closes early

    async def check(self) -> None:
        if self._server is None:
            raise InferenceUnavailable("no model is deployed")
        try:
            await self._server.check_health()
        except Exception as e:  # the engine's own error types: a dead loop, a stuck step
            raise InferenceUnavailable(str(e)) from None

    async def close(self) -> None:
        if self._server is not None and self._server.engine is not None:
            await self._server.engine.stop("the gateway is shutting down")
        self._server = None

    def _new_server(self, checkpoint: str) -> Any:
        from inference_svc.config import EngineConfig
        from inference_svc.serve import InferenceServer, ServeConfig

        config = ServeConfig(
            checkpoint=checkpoint,
            artifacts_root=self.artifacts_root,
            sandbox_url=self.sandbox_url or None,
            engine=self.engine_config or EngineConfig(),
        )
        return InferenceServer(config)

    async def _read_info(self) -> ModelInfo:
        info = await self._server.info()
        return ModelInfo(
            id=self.model_id,
            context_length=int(info["config"]["sequence_len"]),
            checkpoint=_artifact_name(info["path"], info["checkpoint"]),
            created=int(time.time()),
            tokenizer=info.get("tokenizer") or "",
        )


def _artifact_name(path: str, asked: str) -> str:
    """`run/stage/step_N` from the checkpoint's directory (…/runs/<run>/<stage>/<step>)."""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-3:]) if len(parts) >= 3 and parts[-4:-3] == ["runs"] else asked
