"""routes/models.py: checkpoints with their eval results, a stage's curves from its log.jsonl, and
deployments that go loading -> serving or failed (polled when the client does not wait)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from chatforge import checkpoint
from chatforge.artifacts import ArtifactStore, eval_result_path
from chatforge.contracts.events import LOG_FILE, ProgressEvent, StartEvent, ValidationEvent
from tests.gateway.conftest import make_model

RUN = "cmp"
EVAL = {
    "checkpoint": f"{RUN}/sft/step_000002", "stage": "sft", "step": 2, "params": 123, "bpb": 1.75,
    "core": {"score": 0.12, "tasks": {"hellaswag": {"accuracy": 0.3, "centered": 0.07, "n": 40}}},
    "chat": {"chatcore": 0.05, "tasks": {"arc_easy": {"accuracy": 0.31, "centered": 0.08, "n": 40}},
             "samples": {"arc_easy": [{"prompt": "q", "completion": "a"}]}},
    "duration_s": 4.0,
}  # fmt: skip
PROGRESS_STEPS = 1000


@pytest.fixture(scope="module")
def store_root(tmp_path_factory, tiny_tokenizer) -> Path:
    """Run `cmp`: base (a long log), sft at steps 1 and 2 (step 2 evaluated), and a corrupt checkpoint."""
    root = tmp_path_factory.mktemp("models-artifacts")
    store = ArtifactStore(root)
    tiny_tokenizer.save(store.tokenizer_path("default"))
    model = make_model(tiny_tokenizer.vocab_size)
    saved = {}
    for stage, step in (("base", 2), ("sft", 1), ("sft", 2), ("broken", 1)):
        saved[stage, step] = checkpoint.save(
            store.stage_dir(RUN, stage), step, model.state_dict(), config=model.config.to_dict(),
            metrics={"val_bpb": 2.0 - step / 10}, extra={"tokenizer": "default"},
        )  # fmt: skip
    eval_result_path(saved["sft", 2]).write_text(json.dumps(EVAL), encoding="utf-8")
    # Bytes that no longer match meta.json's sha256: listed, but loading it fails.
    weights = saved["broken", 1] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")

    events = [StartEvent(step=0, num_steps=PROGRESS_STEPS, workers=1, resumed=False)]
    for step in range(1, PROGRESS_STEPS + 1):
        events.append(
            ProgressEvent(step=step, loss=5 - step / 1000, lr=0.02, tokens_per_s=1e3, mfu=0.0, eta_s=1.0)
        )
        if step % 250 == 0:
            events.append(ValidationEvent(step=step, val_bpb=2 - step / 1000))
    lines = [e.model_dump_json() for e in events]
    lines.insert(
        5, json.dumps({"type": "progress", "version": 99, "step": 3, "loss": -1.0})
    )  # a newer trainer's
    (store.stage_dir(RUN, "base") / LOG_FILE).write_text(
        "\n".join(lines) + '\n{"type": "valid', encoding="utf-8"
    )
    return root


@pytest.fixture(scope="module")
def models_gateway(launch, store_root):  # type: ignore[no-untyped-def]
    """Keys off; the engine in process with nothing deployed at start."""
    return launch(auth="off", deploy=False, artifacts_root=str(store_root))


def test_checkpoints_carry_their_eval_results_without_the_samples(models_gateway) -> None:
    data = httpx.get(models_gateway.url + "/v1/checkpoints").json()["data"]
    by_id = {c["id"]: c for c in data}
    evaluated = by_id[f"{RUN}/sft/step_000002"]
    assert (evaluated["run"], evaluated["stage"], evaluated["step"]) == (RUN, "sft", 2)
    expected = {**EVAL, "chat": {k: v for k, v in EVAL["chat"].items() if k != "samples"}}
    assert evaluated["eval"] == expected
    assert by_id[f"{RUN}/sft/step_000001"]["eval"] is None  # not measured
    assert by_id[f"{RUN}/base/step_000002"]["metrics"] == {"val_bpb": 1.8}


def test_stage_curves_come_from_its_log_thinned_to_the_points_asked(models_gateway) -> None:
    url = f"{models_gateway.url}/v1/checkpoints/{RUN}/base/curves"
    full = httpx.get(url, params={"points": 10_000}).json()
    assert len(full["loss"]) == PROGRESS_STEPS  # the newer version's event and the torn line are left out
    assert full["loss"][0] == [1, 4.999] and full["loss"][-1] == [PROGRESS_STEPS, 4.0]
    assert full["val_bpb"] == [[250, 1.75], [500, 1.5], [750, 1.25], [1000, 1.0]]

    thin = httpx.get(url, params={"points": 50}).json()
    assert len(thin["loss"]) == 50
    assert thin["loss"][0] == full["loss"][0] and thin["loss"][-1] == full["loss"][-1]
    steps = [step for step, _ in thin["loss"]]
    assert steps == sorted(set(steps)), "evenly spaced, in order, none twice"
    assert httpx.get(url).json()["loss"] == httpx.get(url, params={"points": 200}).json()["loss"]

    # A stage without a log has empty curves; a stage that is not there, or a bad name, is a 404.
    assert httpx.get(f"{models_gateway.url}/v1/checkpoints/{RUN}/sft/curves").json()["loss"] == []
    missing = httpx.get(f"{models_gateway.url}/v1/checkpoints/{RUN}/rl/curves")
    assert missing.status_code == 404 and "rl" in missing.json()["error"]["message"]
    assert httpx.get(f"{models_gateway.url}/v1/checkpoints/{RUN}/..a/curves").status_code == 404
    assert httpx.get(url, params={"points": 1}).status_code == 400


def _poll_deployment(url: str, until: set[str], timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = httpx.get(url + "/v1/deployments/current").json()
        if current["state"] in until:
            return current
        time.sleep(0.1)
    raise AssertionError(f"the deployment stayed {current['state']!r} for {timeout_s}s")


def test_a_deployment_without_waiting_goes_from_loading_to_serving(models_gateway) -> None:
    url = models_gateway.url
    started = httpx.post(url + "/v1/deployments", json={"checkpoint": f"{RUN}/sft", "wait": False})
    assert started.status_code == 202
    record = started.json()
    assert record["state"] == "loading" and record["checkpoint"] == f"{RUN}/sft/step_000002"
    assert record["model"] is None and record["deployed"] is None

    done = _poll_deployment(url, {"serving", "failed"})
    assert done["state"] == "serving", done["message"]
    assert (
        done["id"] == record["id"] and done["model"] == "chatforge" and done["deployed"] >= record["started"]
    )
    assert httpx.get(url + "/v1/models").json()["data"][0]["checkpoint"] == f"{RUN}/sft/step_000002"


def test_a_deployment_that_cannot_load_is_failed_with_its_reason_and_the_old_model_serves(
    models_gateway,
) -> None:
    url = models_gateway.url
    serving = httpx.post(url + "/v1/deployments", json={"checkpoint": f"{RUN}/base"}, timeout=60)
    assert serving.status_code == 201 and serving.json()["state"] == "serving"

    started = httpx.post(url + "/v1/deployments", json={"checkpoint": f"{RUN}/broken", "wait": False})
    assert started.status_code == 202 and started.json()["state"] == "loading"
    failed = _poll_deployment(url, {"serving", "failed"})
    assert failed["state"] == "failed" and failed["id"] == started.json()["id"]
    assert "model.safetensors" in failed["message"], failed["message"]
    # The load happens before the switch: what served before still does.
    assert httpx.get(url + "/v1/models").json()["data"][0]["checkpoint"] == f"{RUN}/base/step_000002"
