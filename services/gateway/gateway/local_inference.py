"""The inference service in the gateway's own process: the one-machine path, and the tests' path.

Wraps `inference_svc.serve.InferenceServer`, the very class the Ray Serve replica runs (the real
engine: paged KV cache, continuous batching, tool loop), without Ray. Imports torch, so it is
imported only in local mode; the gateway image uses `RemoteInference`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from chatforge.contracts.errors import ErrorKind, ServiceError
from chatforge.contracts.generate import ErrorEvent, GenerateRequest, StreamItem
from chatforge.contracts.sampling import SamplingParams
from gateway.inference import InferenceUnavailable, ModelInfo


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

    async def deploy(self, checkpoint: str, progress: Callable[[str], None] | None = None) -> ModelInfo:
        if progress is not None:
            progress(f"loading {checkpoint} in the gateway's engine")
        async with self._lock:
            if self._server is None:
                self._server = await asyncio.to_thread(self._new_server, checkpoint)
            else:
                await self._server.switch_checkpoint(checkpoint)
            self._info = await self._read_info()
            return self._info

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> AsyncIterator[StreamItem]:
        if self._server is None:
            raise InferenceUnavailable("no model is deployed: POST /v1/deployments with a checkpoint")
        stream = self._server.generate(GenerateRequest(prompt_ids=prompt_ids, sampling=sampling))
        try:
            first = await anext(stream)
            if isinstance(first.event, ErrorEvent) and first.event.error.kind is not ErrorKind.INTERNAL:
                raise ServiceError(first.event.error)  # refused before anything streamed: a status
            yield first
            async for item in stream:
                yield item
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
        from inference_svc.serve import InferenceServer
        from inference_svc.settings import load_settings

        settings = load_settings(
            checkpoint=checkpoint,
            artifacts_root=self.artifacts_root,
            sandbox_url=self.sandbox_url or None,
            engine=self.engine_config,
        )
        return InferenceServer(settings)

    async def _read_info(self) -> ModelInfo:
        return ModelInfo.of(self.model_id, await self._server.info(), int(time.time()))
