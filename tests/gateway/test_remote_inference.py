"""The gateway against the inference service over HTTP: `RemoteInference` talking to the Serve app's
own class (`InferenceServer`, its HTTP handler: POST /generate NDJSON, GET /info, GET /healthz)
served by uvicorn on 127.0.0.1, as Serve's proxy would serve it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
import uvicorn
from gateway.remote_inference import RemoteInference
from inference_svc.serve import InferenceServer
from inference_svc.settings import load_settings
from starlette.applications import Starlette
from starlette.routing import Route

from chatforge.contracts.errors import ErrorKind, ServiceError
from chatforge.contracts.generate import FinishEvent
from chatforge.contracts.sampling import SamplingParams
from tests.gateway.conftest import CHECKPOINT


@pytest.fixture(scope="module")
def inference_http(artifacts) -> Iterator[tuple[str, InferenceServer]]:
    server = InferenceServer(
        load_settings(checkpoint=CHECKPOINT, artifacts_root=str(artifacts), num_blocks=256)
    )

    async def endpoint(request):
        return await server(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    while not web.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{web.servers[0].sockets[0].getsockname()[1]}", server
    web.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def remote_gateway(launch, inference_http):
    url, _ = inference_http

    async def remote(settings):
        client = RemoteInference(url, model_id=settings.model_id)
        await client.refresh()
        return client

    return launch(auth="off", inference=remote)


def test_chat_through_the_remote_inference_service(remote_gateway, gateway):
    client = openai.OpenAI(base_url=remote_gateway.url + "/v1", api_key="-", max_retries=0)
    models = client.models.list().data
    assert models[0].id == "chatforge" and models[0].checkpoint == CHECKPOINT + "/step_000001"
    kwargs = dict(
        model="chatforge", messages=[{"role": "user", "content": "hello"}], max_tokens=12, temperature=0
    )
    remote = client.chat.completions.create(**kwargs)
    local = openai.OpenAI(base_url=gateway.url + "/v1", api_key="-", max_retries=0).chat.completions.create(
        **kwargs
    )
    # same checkpoint, same greedy decoding: the same answer whichever way the engine is reached
    assert remote.choices[0].message.content == local.choices[0].message.content
    assert remote.usage == local.usage
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(**kwargs, stream=True)
    )
    assert streamed == remote.choices[0].message.content
    assert httpx.get(remote_gateway.url + "/readyz").json()["checks"]["inference"] == "ok"


def test_remote_refusals_raise_typed_errors(inference_http):
    url, _ = inference_http

    async def run():
        client = RemoteInference(url, model_id="chatforge")
        try:
            await client.refresh()
            sampling = SamplingParams(max_tokens=4)
            with pytest.raises(ServiceError, match="not an id") as refused:
                async for _ in client.generate([10**6], sampling):
                    pass
            assert (
                refused.value.kind is ErrorKind.INVALID_REQUEST and refused.value.detail.param == "prompt_ids"
            )
            with pytest.raises(ServiceError) as too_long:  # the numbers arrive as fields
                async for _ in client.generate([1] * 5000, sampling):
                    pass
            detail = too_long.value.detail
            assert detail.kind is ErrorKind.CONTEXT_LENGTH_EXCEEDED and detail.prompt_tokens == 5000
            assert detail.context_length == client.model_info().context_length
            items = [item async for item in client.generate([1, 2, 3], sampling)]
            assert isinstance(items[-1].event, FinishEvent)
            assert sum(item.token_id is not None for item in items) <= 4
        finally:
            await client.close()

    asyncio.run(run())


def test_unreachable_inference_is_503(launch):
    async def dead(settings):
        return RemoteInference("http://127.0.0.1:1", model_id=settings.model_id)

    gw = launch(auth="off", inference=dead)
    r = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "chatforge", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 503
    assert httpx.get(gw.url + "/readyz").json()["checks"]["inference"].startswith("failing")


def test_a_stream_cut_without_its_finish_ends_with_an_error_item(inference_http):
    """A replica that goes away after the headers: the body ends (or carries a proxy's text) with no
    finish event. The caller gets an unavailable error as the last item instead of a silent end."""
    from starlette.responses import Response, StreamingResponse

    from chatforge.contracts.generate import StreamItem

    url, _ = inference_http
    info = httpx.get(url + "/info", timeout=30).content  # the real service's description

    async def cut(request):  # type: ignore[no-untyped-def]
        if request.url.path.endswith("/info"):
            return Response(info, media_type="application/json")
        tail = "upstream error" if request.url.path.startswith("/tail") else ""

        async def body():  # type: ignore[no-untyped-def]
            for token in (5, 6):
                yield StreamItem(token_id=token, text="x").to_json() + "\n"
            if tail:
                yield tail + "\n"

        return StreamingResponse(body(), media_type="application/x-ndjson")

    app = Starlette(routes=[Route("/{path:path}", cut, methods=["GET", "POST"])])
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    while not web.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{web.servers[0].sockets[0].getsockname()[1]}"

    async def collect(query: str) -> list:
        client = RemoteInference(base + query, model_id="m")
        try:
            return [item async for item in client.generate([1, 2], SamplingParams(max_tokens=4))]
        finally:
            await client.close()

    try:
        for query, why in (("", "ended before its finish"), ("/tail", "not a stream item")):
            items = asyncio.run(collect(query))
            assert [x.token_id for x in items[:2]] == [5, 6]
            last = items[-1].event
            assert (
                last.kind == "error"
                and last.error.kind is ErrorKind.UNAVAILABLE
                and why in last.error.message
            )
    finally:
        web.should_exit = True
        thread.join(10)
