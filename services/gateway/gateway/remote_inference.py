"""The inference service as a Ray Serve application, reached over HTTP through Serve's proxy.

`POST <url>/generate` streams NDJSON lines, one stream item each (`inference_svc.serve`);
`GET <url>/info` describes the model; `GET <url>/healthz` is the engine's health. Leaving a stream
early closes the HTTP response, and Serve cancels the request in the replica. A deployment switch
changes the Serve deployment's config where the cluster keeps it (`gateway.deployer`: Serve's REST
API, or the chart's RayService), so every replica switches; it is checked with a generation on the
new model and rolled back when that fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
from pydantic import ValidationError

from chatforge.contracts.errors import ErrorDetail, ErrorKind, ServiceError
from chatforge.contracts.generate import (
    ErrorEvent,
    FinishEvent,
    GenerateRequest,
    ServedModelInfo,
    StreamItem,
)
from chatforge.contracts.sampling import SamplingParams
from gateway.deployer import DeployError, Progress, ServeSwitch, rollout
from gateway.inference import InferenceUnavailable, ModelInfo

INFO_TTL_S = 5.0  # /v1/models and every chat request read the model info; refresh it this often


class RemoteInference:
    def __init__(
        self,
        url: str,
        *,
        model_id: str,
        switch: ServeSwitch | None = None,
        deploy_timeout_s: float = 600.0,
        timeout_s: float = 600.0,
    ):
        self.url = url.rstrip("/")
        self.model_id = model_id
        self.switch = switch
        self.deploy_timeout_s = deploy_timeout_s
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
        try:
            served = ServedModelInfo.model_validate_json(response.content)
        except ValidationError as e:
            raise InferenceUnavailable(f"inference service at {self.url} sent a bad /info: {e}") from None
        self._info = ModelInfo.of(self.model_id, served, int(time.time()))
        self._info_at = time.monotonic()
        return self._info

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> AsyncIterator[StreamItem]:
        if time.monotonic() - self._info_at > INFO_TTL_S:
            await self.refresh()
        # Every field is sent, None included: an unset top_k (None: all tokens) is not the default 50.
        body = GenerateRequest(prompt_ids=prompt_ids, sampling=sampling).model_dump_json()
        request = self._http.build_request(
            "POST", f"{self.url}/generate", content=body, headers={"content-type": "application/json"}
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as e:
            raise InferenceUnavailable(f"inference service at {self.url}: {e}") from None
        try:
            if response.status_code != 200:
                raise ServiceError(_error_detail(response.status_code, await response.aread()))
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                try:
                    item = StreamItem.from_json(line)
                except ValidationError:  # a proxy's error text in place of a stream item
                    yield _broken(
                        f"inference stream carried a line that is not a stream item: {line[:200]!r}"
                    )
                    return
                yield item
                if item.is_last:
                    return
            # The body ended without a finish or error event: the replica went away mid-stream.
            yield _broken("inference stream ended before its finish event (the replica went away?)")
        except httpx.HTTPError as e:
            yield _broken(f"inference stream broke: {e}")
        finally:
            await response.aclose()

    async def deploy(self, checkpoint: str, progress: Progress | None = None) -> ModelInfo:
        if self.switch is None:
            raise InferenceUnavailable(
                "switching checkpoints needs where the Serve config lives: set "
                "CHATFORGE_GATEWAY_SERVE_ADMIN_URL (the Ray dashboard) or CHATFORGE_GATEWAY_KUBE_RAYSERVICE"
            )
        try:
            await rollout(
                self.switch, checkpoint, self._health_check, progress or (lambda _: None),
                timeout_s=self.deploy_timeout_s,
            )  # fmt: skip
        except DeployError as e:
            raise InferenceUnavailable(f"could not switch to {checkpoint}: {e}") from None
        return await self.refresh()

    # Requests through Serve's proxy land on any replica; this many /info answers must all name the
    # new checkpoint (Serve has reported every replica healthy on the new config by then).
    HEALTH_INFO_READS = 8

    async def _health_check(self, checkpoint: str) -> None:
        """Every /info read names `checkpoint`, and a short sampled generation finishes."""
        for _ in range(self.HEALTH_INFO_READS):
            info = await self.refresh()
            if not _same_checkpoint(info.checkpoint, checkpoint):
                raise DeployError(f"a replica still serves {info.checkpoint}")
        vocab = int((await self._served()).config.get("vocab_size") or 2)
        prompt = [i % vocab for i in range(1, 9)]
        # Sampled, not greedy: weights gone to NaN still "generate" greedily (argmax of NaNs).
        sampling = SamplingParams(max_tokens=4, temperature=1.0, seed=0)
        tokens = 0
        async for item in self.generate(prompt, sampling):
            tokens += item.token_id is not None
            if isinstance(item.event, ErrorEvent):
                raise DeployError(f"a generation on it failed: {item.event.error.message}")
            if isinstance(item.event, FinishEvent) and tokens == 0:
                raise DeployError("a generation on it finished without a token")

    async def _served(self) -> ServedModelInfo:
        response = await self._http.get(f"{self.url}/info", timeout=5.0)
        return ServedModelInfo.model_validate_json(response.content)

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
        if self.switch is not None:
            await self.switch.close()


def _same_checkpoint(served: str, asked: str) -> bool:
    """`run/stage/step_N` served for `run/stage` or `run/stage/step_N` asked."""
    return served == asked or served.startswith(asked.rstrip("/") + "/step_")


def _broken(message: str) -> StreamItem:
    """The last item of a stream that broke: an unavailable error, so the caller can retry."""
    return StreamItem(event=ErrorEvent(error=ErrorDetail(kind=ErrorKind.UNAVAILABLE, message=message)))


def _error_detail(status: int, body: bytes) -> ErrorDetail:
    """The service's ErrorDetail from a refusal's body; a body without one (a proxy's page) is
    unavailable (5xx) or invalid (4xx), with the body's start as the message."""
    try:
        return ErrorDetail.model_validate(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError, ValidationError):
        kind = ErrorKind.INVALID_REQUEST if 400 <= status < 500 else ErrorKind.UNAVAILABLE
        text = body[:500].decode(errors="replace")
        return ErrorDetail(kind=kind, message=f"inference service answered {status}: {text}")
