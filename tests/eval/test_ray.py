"""On a local Ray: CORE data-parallel over two workers equals CORE in one process, and the RL
stage runs as a Ray Train job."""

from __future__ import annotations

import pytest

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from tests.eval.test_core import MC_ITEMS, SCHEMA_ITEMS
from trainer.eval.core import CoreTask, evaluate_task


@pytest.mark.slow
def test_core_on_ray_workers_and_rl_as_a_ray_job(tmp_path, tiny_model, tiny_tokenizer):
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
    from trainer.driver import ray_session

    with ray_session(tmp_path, num_cpus=2):  # the trainer's local Ray: loopback, dashboard for Ray Train
        shared = evaluate_core_on_ray(path, tiny_tokenizer, tasks, 2, 8, None)
        assert [r.correct for r in shared] == [r.correct for r in alone]
        assert [r.n_examples for r in shared] == [len(MC_ITEMS), len(SCHEMA_ITEMS)]
        cfg = RLConfig(run="r", artifacts_dir=str(tmp_path), num_steps=1, questions_per_step=1, samples_per_question=2,
                       max_new_tokens=4, eval_questions=1, pass_k=2, tools="none")  # fmt: skip
        metrics = run_rl(cfg)
    assert metrics["step"] == 1 and 0 <= metrics["pass_at_k"] <= 1
    assert [p.name for p in ckpt.list_checkpoints(store.stage_dir("r", "rl"))] == ["step_000001"]
