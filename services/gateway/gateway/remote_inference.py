"""The inference service as a Ray Serve application, reached over HTTP through Serve's proxy.

`POST <url>/generate` streams NDJSON lines, one stream item each (`inference_svc.serve`);
`GET <url>/info` describes the model; `GET <url>/healthz` is the engine's health. Leaving a stream
early closes the HTTP response, and Serve cancels the request in the replica. A deployment switch
goes through the Serve application's handle (`switch_checkpoint`), which needs the Ray cluster.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx

from gateway.inference import (
    GenerationParams,
    InferenceRejected,
    InferenceUnavailable,
    ModelInfo,
    Piece,
    generate_body,
    piece_from_item,
)

INFO_TTL_S = 5.0  # /v1/models and every chat request read the model info; refresh it this often


class RemoteInference:
    def __init__(
        self,
        url: str,
        *,
        model_id: str,
        ray_address: str = "",
        app_name: str = "inference",
        timeout_s: float = 600.0,
    ):
        self.url = url.rstrip("/")
        self.model_id = model_id
        self.ray_address = ray_address
        self.app_name = app_name
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))
        self._info: ModelInfo | None = None
        self._info_at = 0.0

    def model_info(self) -> ModelInfo:
        if self._info is None:
            raise InferenceUnavailable(f"the inference service at {self.url} has not answered yet")
        return self._info

    async def refresh(self) -> ModelInfo:
        try:
            response = await self._http.get(f"{self.url}/info", timeout=5.0)
            response.raise_for_status()
        except httpx.HTTPError as e:
            raise InferenceUnavailable(f"inference service at {self.url}: {e}") from None
        info = response.json()
        self._info = ModelInfo(
            id=self.model_id,
            context_length=int(info["config"]["sequence_len"]),
            checkpoint=str(info["checkpoint"]),
            created=int(time.time()),
            tokenizer=info.get("tokenizer") or "",
        )
        self._info_at = time.monotonic()
        return self._info

    async def generate(self, prompt_ids: list[int], params: GenerationParams) -> AsyncIterator[Piece]:
        if time.monotonic() - self._info_at > INFO_TTL_S:
            await self.refresh()
        request = self._http.build_request(
            "POST", f"{self.url}/generate", json=generate_body(prompt_ids, params)
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise InferenceUnavailable(f"inference service at {self.url}: {e}") from None
        try:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                message = _error_message(body)
                if response.status_code == 400:
                    raise InferenceRejected(message)
                raise InferenceUnavailable(f"inference service answered {response.status_code}: {message}")
            async for line in response.aiter_lines():
                if line.strip():
                    yield piece_from_item(json.loads(line))
        except httpx.HTTPError as e:
            yield Piece(event="error", data={"message": f"inference stream broke: {e}"})
        finally:
            await response.aclose()

    async def deploy(self, checkpoint: str) -> ModelInfo:
        if not self.ray_address:
            raise InferenceUnavailable(
                "switching checkpoints needs the Ray cluster: set CHATFORGE_GATEWAY_RAY_ADDRESS"
            )
        import asyncio

        from ray import serve

        from chatforge.raylocal import init_local_ray

        def switch() -> None:
            import ray

            if not ray.is_initialized():
                init_local_ray("/tmp", address=self.ray_address)
            serve.get_app_handle(self.app_name).switch_checkpoint.remote(checkpoint).result()

        try:
            await asyncio.to_thread(switch)
        except Exception as e:
            raise InferenceUnavailable(
                f"the Serve application could not switch to {checkpoint!r}: {e}"
            ) from None
        return await self.refresh()

    async def check(self) -> None:
        try:
            response = await self._http.get(f"{self.url}/healthz", timeout=2.0)
        except httpx.HTTPError as e:
            raise InferenceUnavailable(f"inference service at {self.url}: {e}") from None
        if response.status_code != 200:
            raise InferenceUnavailable(f"inference service unhealthy: {response.text[:200]}")
        if self._info is None:
            await self.refresh()

    async def close(self) -> None:
        await self._http.aclose()


def _error_message(body: str) -> str:
    try:
        return str(json.loads(body).get("error", body))
    except (json.JSONDecodeError, AttributeError):
        return body[:500]
