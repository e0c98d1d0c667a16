"""On a local Ray: CORE data-parallel over two workers equals CORE in one process, the RL stage runs
as a Ray Train job, and RL survives a killed worker the way the training stages do
(tests/trainer/test_ray.py): the group restarts from the last checkpoint and carries on.

Ray on 2 shared cores is slow to start, so one local Ray serves the module."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from tests.eval.conftest import bigram_model
from tests.eval.test_core import MC_ITEMS, SCHEMA_ITEMS
from trainer.eval.core import CoreTask, evaluate_task
from trainer.telemetry import read_log


@pytest.fixture(scope="module")
def ray_cluster():
    from trainer.driver import ray_session

    temp = tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp")
    try:
        with ray_session(
            Path(temp), num_cpus=2
        ):  # the trainer's local Ray: loopback, dashboard for Ray Train
            yield
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_core_on_ray_workers_and_rl_as_a_ray_job(ray_cluster, tmp_path, tiny_model, tiny_tokenizer):
    from chatforge.contracts.training import RLConfig
    from trainer.eval.stage import evaluate_core_on_ray
    from trainer.rl import run_rl

    store = ArtifactStore(tmp_path)
    tiny_tokenizer.save(store.tokenizer_path("r"))
    path = ckpt.save(store.stage_dir("r", "sft"), 3, tiny_model.state_dict(), config=tiny_model.config.to_dict(),
                     extra={"tokenizer": "r", "stage": "sft", "run": "r"})  # fmt: skip
    tasks = [
        CoreTask("mc", "multiple_choice", MC_ITEMS, num_fewshot=1, random_baseline_pct=25.0),
        CoreTask("wino", "schema", SCHEMA_ITEMS, random_baseline_pct=50.0),
    ]
    alone = [evaluate_task(tiny_model, tiny_tokenizer, t) for t in tasks]
    shared = evaluate_core_on_ray(path, tiny_tokenizer, tasks, 2, 8, None)
    assert [r.correct for r in shared] == [r.correct for r in alone]
    assert [r.n_examples for r in shared] == [len(MC_ITEMS), len(SCHEMA_ITEMS)]
    cfg = RLConfig(run="r", artifacts_dir=str(tmp_path), num_steps=1, questions_per_step=1, samples_per_question=2,
                   max_new_tokens=4, eval_questions=1, pass_k=2, tools="none")  # fmt: skip
    metrics = run_rl(cfg)
    assert metrics["step"] == 1 and 0 <= metrics["pass_at_k"] <= 1
    assert [p.name for p in ckpt.list_checkpoints(store.stage_dir("r", "rl"))] == ["step_000001"]


def answer_script(tok):
    """Transitions for `#### 42` or `#### 41` (a coin flip) then <|assistant_end|>: the reward (42 is
    right) gives every RL step a loss that moves the weights."""
    sp = tok.special_id
    hashes, space = tok.encode("####"), tok.encode(" ")
    assert len(hashes) == 1 and len(space) == 1
    transitions = {sp("<|assistant_start|>"): hashes, hashes[0]: space, space[0]: []}
    for answer in ("42", "41"):
        ids = tok.encode(answer)
        transitions[space[0]].append(ids[0])
        for a, b in zip(ids, [*ids[1:], sp("<|assistant_end|>")], strict=True):
            transitions.setdefault(a, []).append(b)
    return transitions


@pytest.mark.slow
def test_rl_survives_a_killed_worker_and_resumes_from_its_checkpoint(ray_cluster, tmp_path, script_tokenizer):
    from chatforge.contracts.training import RLConfig
    from trainer.rl import run_rl

    tok = script_tokenizer
    store = ArtifactStore(tmp_path)
    tok.save(store.tokenizer_path("toy"))
    model = bigram_model(tok, answer_script(tok))
    ckpt.save(store.stage_dir("toy", "sft"), 1, model.state_dict(), config=model.config.to_dict(),
              extra={"tokenizer": "toy", "stage": "sft", "run": "toy"})  # fmt: skip
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": f"What is 6 times 7? ({i})", "answer": "#### 42"}) + "\n"
                            for i in range(8)))  # fmt: skip
    marker = tmp_path / "killed"
    cfg = RLConfig(
        run="toy", artifacts_dir=str(tmp_path), num_steps=4, questions_per_step=1, samples_per_question=4,
        max_new_tokens=8, temperature=0.5, lr_frac=1.0, eval_every_steps=0, eval_questions=2, pass_k=2,
        checkpoint_every_steps=2, rows_file=str(rows), tools="none", workers=2,
        fail_at_step=3, fail_marker=str(marker), max_failures=1,
    )  # fmt: skip
    metrics = run_rl(cfg)
    assert marker.read_text().startswith("rank 1 exited at step 3")
    stage = store.stage_dir("toy", "rl")
    starts = read_log(stage / "log.jsonl", "start")
    assert [(s.step, s.resumed) for s in starts] == [(0, False), (2, True)]
    steps = read_log(stage / "log.jsonl", "rl")
    # steps 1-3 ran, rank 1 died before step 4, the group restarted from the step-2 checkpoint:
    # step 3 ran again from the same weights, optimizer state and seeds, with the same result
    assert [e.step for e in steps] == [1, 2, 3, 3, 4]
    first, again = steps[2], steps[3]
    assert again.mean_reward == first.mean_reward
    assert again.loss == pytest.approx(first.loss, rel=1e-5)
    assert any(e.loss != 0 for e in steps)  # the runs learned something to compare
    assert metrics["step"] == 4 and 0 <= metrics["pass_at_k"] <= 1
    assert [p.name for p in ckpt.list_checkpoints(stage)] == ["step_000002", "step_000004"]
