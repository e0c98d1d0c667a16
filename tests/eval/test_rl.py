"""RL: advantages, the loss mask and normalisation on toys, and a short GRPO run that learns,
checkpoints and resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from inference_svc.driver import Completion

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.chat import render_for_completion
from chatforge.contracts.training import ConfigError, RLConfig
from tests.eval.conftest import LocalPython, bigram_model, tool_script
from trainer.rl import group_advantages, pass_at_k, policy_batch, policy_loss, rl_worker
from trainer.telemetry import read_log


def test_group_advantages_subtract_the_group_mean():
    assert group_advantages([1, 0, 0, 0, 1, 1], 3) == pytest.approx(
        [2 / 3, -1 / 3, -1 / 3, -2 / 3, 1 / 3, 1 / 3]
    )
    assert group_advantages([1, 1, 0, 0], 2) == [0, 0, 0, 0]  # all right or all wrong: nothing to learn
    with pytest.raises(ValueError):
        group_advantages([1, 0, 1], 2)


def test_policy_batch_masks_prompt_forced_output_and_padding():
    # prompt [1 2 3]; completion: sampled 10 11, forced 20 21, sampled 12
    a = Completion([1, 2, 3], [10, 11, 20, 21, 12], [1, 1, 0, 0, 1])
    b = Completion([1, 2], [30], [1])
    x, y = policy_batch([a, b], pad_id=0)
    assert x.tolist() == [[1, 2, 3, 10, 11, 20, 21], [1, 2, 0, 0, 0, 0, 0]]
    assert y.tolist() == [[-1, -1, 10, 11, -1, -1, 12], [-1, 30, -1, -1, -1, -1, -1]]


def test_policy_loss_is_token_normalised_advantage_weighted_nll(tiny_model):
    a = Completion([1, 2, 3], [10, 11, 20, 21, 12], [1, 1, 0, 0, 1])
    b = Completion([1, 2], [30, 31], [1, 1])
    x, y = policy_batch([a, b], pad_id=0)
    adv = torch.tensor([0.5, -1.0])
    got = policy_loss(tiny_model, x, y, adv, n_tokens=5.0)
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model(x).double(), -1)
    hand = (
        -(0.5 * (logp[0, 2, 10] + logp[0, 3, 11] + logp[0, 6, 12]) - 1.0 * (logp[1, 1, 30] + logp[1, 2, 31]))
        / 5
    )
    assert float(got.detach()) == pytest.approx(float(hand), rel=1e-4)
    # forced tokens get no gradient: changing them changes nothing
    c = Completion([1, 2, 3], [10, 11, 40, 41, 12], [1, 1, 0, 0, 1])
    x2, y2 = policy_batch([c, b], pad_id=0)
    assert (y2 == y).all()


def test_pass_at_k_and_config_errors():
    assert pass_at_k([[False, True], [False, False], [True, True]]) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="samples-per-question"):
        RLConfig(run="r", artifacts_dir="/tmp", samples_per_question=1)


def _p_answer(model, tok, answer: str) -> float:
    """Probability the model writes `answer` right after `#### `."""
    space = tok.encode(" ")[0]
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([[space]]))[0, -1].double(), -1)
    return float(probs[tok.encode(answer)[0]])


def test_grpo_run_learns_checkpoints_and_resumes(script_tokenizer, tmp_path):
    """The scripted model calls python, then answers 42 or 41 by a coin flip; the reward favours
    42, so GRPO must raise p(42); the run checkpoints, logs pass@k and resumes where it stopped."""
    tok = script_tokenizer
    store = ArtifactStore(tmp_path)
    tok.save(store.tokenizer_path("toy"))
    model = bigram_model(tok, tool_script(tok, answers=("42", "41")))
    ckpt.save(store.stage_dir("toy", "sft"), 1, model.state_dict(), config=model.config.to_dict(),
              extra={"tokenizer": "toy", "stage": "sft", "run": "toy"})  # fmt: skip
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"question": f"What is 6 times 7? ({i})", "answer": "#### 42"}) + "\n"
            for i in range(8)
        )
    )
    p_before = _p_answer(model, tok, "42")
    assert 0.3 < p_before < 0.7
    cfg = RLConfig(
        run="toy", artifacts_dir=str(tmp_path), num_steps=3, questions_per_step=2, samples_per_question=4,
        max_new_tokens=30, lr_frac=1.0, eval_every_steps=3, eval_questions=2, pass_k=2,
        checkpoint_every_steps=2, rows_file=str(rows), tools="none",
    )  # fmt: skip
    metrics = rl_worker(cfg.to_dict(), tool_executor=LocalPython())
    stage = store.stage_dir("toy", "rl")
    assert [p.name for p in ckpt.list_checkpoints(stage)] == ["step_000002", "step_000003"]
    trained = bigram_model(tok, {})
    ckpt.load_state_into(trained, ckpt.load(ckpt.latest(stage)).model_state)
    assert _p_answer(trained, tok, "42") > p_before + 0.05
    events = read_log(stage / "log.jsonl")
    assert [e.step for e in events if e.type == "rl"] == [1, 2, 3]
    (ev,) = [e for e in events if e.type == "rl_eval"]
    assert 0 <= ev.pass_at_k <= 1 and ev.pass_k == 2 and metrics["pass_at_k"] == ev.pass_at_k
    assert all(0 <= e.mean_reward <= 1 and math.isfinite(e.loss) for e in events if e.type == "rl")
    # resume: a longer run continues at step 3 instead of starting over
    rl_worker({**cfg.to_dict(), "num_steps": 4}, tool_executor=LocalPython())
    assert [e.step for e in read_log(stage / "log.jsonl", "rl")] == [1, 2, 3, 4]
    prompt = render_for_completion(tok, [{"role": "user", "content": "x"}])
    assert prompt[-1] == tok.special_id("<|assistant_start|>")
