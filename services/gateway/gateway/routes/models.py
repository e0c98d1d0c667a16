"""Models, checkpoints and deployments: what is served, what could be, and switching between them."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from chatforge.checkpoint import CheckpointError, read_meta
from gateway import redis_keys
from gateway.auth import AdminCaller, ChatCaller
from gateway.errors import APIError
from gateway.inference import InferenceUnavailable, ModelInfo
from gateway.state import State

router = APIRouter(tags=["models"])


def _model_object(info: ModelInfo) -> dict[str, Any]:
    return {
        "id": info.id, "object": "model", "created": info.created, "owned_by": "chatforge",
        "checkpoint": info.checkpoint, "context_length": info.context_length,
    }  # fmt: skip


@router.get("/v1/models")
def list_models(state: State, caller: ChatCaller) -> dict[str, Any]:
    try:
        data = [_model_object(state.inference.model_info())]
    except InferenceUnavailable:
        data = []
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
def get_model(model_id: str, state: State, caller: ChatCaller) -> dict[str, Any]:
    try:
        info = state.inference.model_info()
    except InferenceUnavailable:
        info = None
    if info is None or model_id not in (info.id, info.checkpoint):
        raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")
    return _model_object(info)


@router.get("/v1/checkpoints")
def list_checkpoints(state: State, caller: ChatCaller) -> dict[str, Any]:
    """Every complete checkpoint in the artifact store with its step and metrics."""
    data = []
    for name, path in state.store.checkpoints():
        try:
            meta = read_meta(path)
        except CheckpointError:
            continue  # unreadable metadata: not a checkpoint anyone can deploy
        data.append(
            {
                "id": name, "object": "checkpoint", "step": meta.get("step"),
                "created": int(path.stat().st_mtime), "metrics": meta.get("metrics") or {},
                "tokenizer": meta.get("tokenizer", ""),
            }
        )  # fmt: skip
    return {"object": "list", "data": data}


class DeploymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    checkpoint: str = Field(min_length=3, max_length=400, description="run/stage or run/stage/step_N")


@router.post("/v1/deployments", status_code=201)
async def deploy(body: DeploymentRequest, state: State, caller: AdminCaller) -> dict[str, Any]:
    """Point the inference service at a checkpoint."""
    state.store.resolve_checkpoint(body.checkpoint)  # 404 naming the checkpoint when it is not there
    try:
        info = await state.inference.deploy(body.checkpoint)
    except InferenceUnavailable as e:
        raise APIError(503, str(e), code="inference_unavailable") from None
    record = {
        "object": "deployment",
        "checkpoint": info.checkpoint,
        "model": info.id,
        "deployed": int(time.time()),
    }
    state.redis.set(redis_keys.DEPLOYMENT, json.dumps(record))
    return record


@router.get("/v1/deployments/current")
def current_deployment(state: State, caller: ChatCaller) -> dict[str, Any]:
    raw = state.redis.get(redis_keys.DEPLOYMENT)
    if raw is None:
        raise APIError(404, "nothing has been deployed through the API yet", code="no_deployment")
    return json.loads(raw)
