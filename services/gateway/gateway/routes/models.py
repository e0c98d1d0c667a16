"""Models, checkpoints and deployments: what is served, what could be, and switching between them.

A checkpoint is listed with its metrics and, once the eval stage measured it, its eval results
(`step_N.eval.json` beside it); a stage's curves come from its `log.jsonl`. A deployment is a record
in Redis that goes `loading` → `serving` or `failed`, so a client that does not wait for the load
(`"wait": false`) can poll `GET /v1/deployments/current` and show progress: while loading, its
`message` is the switch's latest step (config written, replicas loading, health check, rollback).
With a Ray Serve cluster every replica switches, and a switch whose health check fails is rolled
back to the checkpoint served before (`gateway.deployer`); the record is then `failed`, saying so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from typing import Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import WatchError

from chatforge.artifacts import eval_result_path
from chatforge.checkpoint import CheckpointError, read_meta
from chatforge.contracts.events import LOG_FILE, ProgressEvent, ValidationEvent, read_log
from gateway import redis_keys
from gateway.auth import AdminWriter, ChatCaller
from gateway.errors import APIError, from_exception
from gateway.inference import InferenceUnavailable, ModelInfo
from gateway.openapi import answers
from gateway.state import GatewayState, State

log = logging.getLogger(__name__)
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


@router.get("/v1/models/{model_id:path}", responses=answers(404))
def get_model(model_id: str, state: State, caller: ChatCaller) -> dict[str, Any]:
    try:
        info = state.inference.model_info()
    except InferenceUnavailable:
        info = None
    if info is None or model_id not in (info.id, info.checkpoint):
        raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")
    return _model_object(info)


# --- checkpoints ------------------------------------------------------------------------------


@router.get("/v1/checkpoints")
def list_checkpoints(state: State, caller: ChatCaller) -> dict[str, Any]:
    """Every complete checkpoint in the artifact store with its step, metrics and eval results."""
    data = []
    for name, path in state.store.checkpoints():
        try:
            meta = read_meta(path)
        except CheckpointError:
            continue  # unreadable metadata: not a checkpoint anyone can deploy
        run, stage, _ = name.split("/")
        data.append(
            {
                "id": name, "object": "checkpoint", "run": run, "stage": stage, "step": meta.get("step"),
                "created": int(path.stat().st_mtime), "metrics": meta.get("metrics") or {},
                "tokenizer": meta.get("tokenizer", ""), "eval": _eval_results(eval_result_path(path)),
            }
        )  # fmt: skip
    return {"object": "list", "data": data}


# A sparkline is a few dozen pixels wide: more points than this only cost bytes.
DEFAULT_CURVE_POINTS = 200


@router.get("/v1/checkpoints/{run}/{stage}/curves", responses=answers(404))
def stage_curves(
    run: str, stage: str, state: State, caller: ChatCaller,
    points: int = Query(DEFAULT_CURVE_POINTS, ge=2, le=10_000, description="most points per curve"),
) -> dict[str, Any]:  # fmt: skip
    """A stage's training loss and validation bits per byte by step, from its log.jsonl."""
    stage_dir = state.store.stage_dir(run, stage)  # a malformed name is a 404 naming it
    if not stage_dir.is_dir():
        raise APIError(404, f"no stage {stage!r} in run {run!r}", code="not_found")
    events = read_log(stage_dir / LOG_FILE)
    loss = [(e.step, e.loss) for e in events if isinstance(e, ProgressEvent) and math.isfinite(e.loss)]
    bpb = [(e.step, e.val_bpb) for e in events if isinstance(e, ValidationEvent) and math.isfinite(e.val_bpb)]
    return {
        "object": "curves", "run": run, "stage": stage,
        "loss": _thin(loss, points), "val_bpb": _thin(bpb, points),
    }  # fmt: skip


def _eval_results(path: Any) -> dict[str, Any] | None:
    """The eval stage's scores for one checkpoint, without its sample completions (they can be
    large, and a comparison table needs the numbers); None when it was not evaluated."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        log.warning("skipping unreadable eval results %s: %s", path, e)
        return None
    chat = results.get("chat")
    if isinstance(chat, dict):
        results["chat"] = {k: v for k, v in chat.items() if k != "samples"}
    return results


def _thin(points: list[tuple[int, float]], most: int) -> list[tuple[int, float]]:
    """At most `most` points, evenly spaced through the curve, keeping the first and the last."""
    if len(points) <= most:
        return points
    stride = (len(points) - 1) / (most - 1)
    return [points[round(i * stride)] for i in range(most)]


# --- deployments ------------------------------------------------------------------------------


class DeploymentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    checkpoint: str = Field(min_length=3, max_length=400, description="run/stage or run/stage/step_N")
    wait: bool = Field(
        True,
        description="answer once the model serves (201); false: answer at once (202, state loading) "
        "and poll GET /v1/deployments/current",
    )


# The loads run by `"wait": false` requests: referenced here so they are not garbage-collected
# half-way (asyncio keeps only weak references to tasks).
_LOADING: set[asyncio.Task[Any]] = set()


@router.post(
    "/v1/deployments",
    status_code=201,
    responses={202: {"description": "loading (`wait: false`): poll GET /v1/deployments/current"}}
    | answers(404, 503),
)
async def deploy(
    body: DeploymentRequest, state: State, caller: AdminWriter, response: Response
) -> dict[str, Any]:
    """Point the inference service at a checkpoint."""
    path = state.store.resolve_checkpoint(body.checkpoint)  # 404 naming the checkpoint when it is not there
    record = {
        "object": "deployment", "id": f"dep_{secrets.token_hex(8)}",
        "checkpoint": f"{path.parent.parent.name}/{path.parent.name}/{path.name}",
        "state": "loading", "message": "", "model": None, "started": int(time.time()), "deployed": None,
        "loader": state.instance.id,  # who loads it: a record left loading by a gone gateway is failed
    }  # fmt: skip
    state.redis.set(redis_keys.DEPLOYMENT, json.dumps(record))
    if not body.wait:
        task = asyncio.create_task(_load_in_background(state, record))
        _LOADING.add(task)
        task.add_done_callback(_LOADING.discard)
        response.status_code = 202
        return record
    try:
        return await _load(state, record)
    except InferenceUnavailable as e:
        raise APIError(503, str(e), code="inference_unavailable") from None


@router.get("/v1/deployments/current", responses=answers(404))
def current_deployment(state: State, caller: ChatCaller) -> dict[str, Any]:
    raw = state.redis.get(redis_keys.DEPLOYMENT)
    if raw is None:
        raise APIError(404, "nothing has been deployed through the API yet", code="no_deployment")
    record: dict[str, Any] = json.loads(raw)
    if record.get("state") == "loading" and not state.instance.alive(record.get("loader", "")):
        # Its gateway stopped (or was killed) mid-load: nobody will finish it.
        record = {**record, "state": "failed", "message": "the gateway that was loading it stopped before it "
                  "finished; deploy it again"}  # fmt: skip
        _finish(state, record)
    return record


async def _load(state: GatewayState, record: dict[str, Any]) -> dict[str, Any]:
    """Load the checkpoint and record how it went; returns the final record, or raises what the
    load raised after recording it as failed."""

    def progress(line: str) -> None:  # each step of the switch, for a client polling the record
        _finish(state, {**record, "message": line})

    try:
        info = await state.inference.deploy(record["checkpoint"], progress)
    except Exception as e:
        _finish(state, {**record, "state": "failed", "message": _reason(e)})
        raise
    done = {
        **record,
        "state": "serving",
        "checkpoint": info.checkpoint,
        "model": info.id,
        "deployed": int(time.time()),
    }
    _finish(state, done)
    return done


async def _load_in_background(state: GatewayState, record: dict[str, Any]) -> None:
    try:
        await _load(state, record)
    except Exception:
        pass  # recorded as failed, with the reason, for the client polling the record


def _finish(state: GatewayState, record: dict[str, Any]) -> None:
    """Store a deployment's outcome unless a newer request has replaced its record meanwhile (the
    newer one's outcome is the one to show). WATCH makes the check and the write one step."""
    with state.redis.pipeline() as pipe:
        try:
            pipe.watch(redis_keys.DEPLOYMENT)
            current = pipe.get(redis_keys.DEPLOYMENT)
            if current is not None and json.loads(current).get("id") != record["id"]:
                return
            pipe.multi()
            pipe.set(redis_keys.DEPLOYMENT, json.dumps(record))
            pipe.execute()
        except WatchError:
            return  # a newer request wrote its record between the check and the write


def _reason(e: Exception) -> str:
    """Why a load failed, as the client may read it: the message of a known failure, never a trace."""
    if isinstance(e, InferenceUnavailable | CheckpointError):
        return str(e)
    log.error("deploying a checkpoint failed", exc_info=e)
    return from_exception(e).message
