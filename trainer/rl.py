"""The RL stage: GRPO-style reinforcement learning on GSM8K, from the SFT checkpoint.

Each step, every rank takes `questions_per_step` questions and samples `samples_per_question`
completions of each through the paged inference engine, with the python tool loop on (the model
learns to use the calculator it was taught in SFT). The reward is 1 for a right final answer
(`#### N`), else 0. The advantage of a completion is its reward minus its group's mean (GRPO,
Shao et al., 2024, without the division by the group's std, as in nanochat and Dr. GRPO: it
would up-weight the questions that are nearly always right or wrong). The loss is

    sum over sampled tokens of  -advantage * log p(token)   /   number of sampled tokens

summed over all ranks (token-level normalisation, DAPO): every generated token weighs the same,
whatever the length of its completion. Prompt tokens and the tool output the engine forced into a
completion are not the model's choices and are masked out.

Every `eval_every_steps`, pass@k on held-out questions (k samples each; right when any is) and the
mean reward are logged. Checkpoints and resume work as in the other stages; `run_rl` runs the
workers as a Ray Train job through the stages' one launcher (`trainer.driver.run_on_ray`: rollouts
and learner on the same workers, and a lost worker restarts the group from the last checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from inference_svc.driver import Completion, EngineDriver

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.chat import Conversation, message, render_for_completion, reply_stop_ids
from chatforge.contracts.events import CheckpointEvent, RLEvalEvent, RLStepEvent, StartEvent
from chatforge.contracts.sampling import SamplingParams
from chatforge.contracts.training import RL_STAGE as STAGE
from chatforge.contracts.training import ConfigError, OptimConfig, RLConfig
from chatforge.loading import load_model
from chatforge.model import GPT, autocast_dtype
from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor, tool_executor_from

from .eval.chat_eval import extract_number, read_jsonl, same_number
from .loop import Ranks, Report, cpu_threads, maybe_fail
from .optim import build_optimizers, clip_grad_norm
from .telemetry import LOG_FILE, Telemetry, describe_device

# --- the pure core --------------------------------------------------------------------------------


def reward(row: dict[str, Any], completion: Completion) -> float:
    """1.0 when the reply's `#### N` equals the row's answer, else 0.0."""
    return float(same_number(extract_number(completion.text), extract_number(row["answer"])))


def group_advantages(rewards: Sequence[float], group_size: int) -> list[float]:
    """Reward minus the mean of its group; groups are consecutive runs of `group_size`."""
    if len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    out: list[float] = []
    for g in range(0, len(rewards), group_size):
        group = rewards[g : g + group_size]
        mean = sum(group) / group_size
        out.extend(r - mean for r in group)
    return out


def policy_batch(completions: Sequence[Completion], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) rows for the policy loss: targets are the sampled completion tokens; the
    prompt, forced tool output and padding are -1 (not trained on)."""
    seqs, targets = [], []
    for c in completions:
        full = c.prompt_ids + c.token_ids
        seqs.append(full[:-1])
        chosen = [t if s else -1 for t, s in zip(c.token_ids, c.sampled, strict=True)]
        targets.append([-1] * (len(c.prompt_ids) - 1) + chosen)
    width = max(len(s) for s in seqs)
    x = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    y = torch.full((len(seqs), width), -1, dtype=torch.long)
    for r, (s, t) in enumerate(zip(seqs, targets, strict=True)):
        x[r, : len(s)] = torch.tensor(s)
        y[r, : len(t)] = torch.tensor(t)
    return x, y


def policy_loss(
    model: GPT, x: torch.Tensor, y: torch.Tensor, advantages: torch.Tensor, n_tokens: float
) -> torch.Tensor:
    """sum(-advantage * log p(sampled token)) / n_tokens, where n_tokens counts the sampled tokens
    of the whole step (all micro-batches, all ranks)."""
    nll = model(x, y, loss_reduction="none")  # -log p, and 0 where the target is -1
    return (nll * advantages.view(-1, 1)).sum() / max(n_tokens, 1.0)


def pass_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Share of questions with at least one right answer among their k samples."""
    return sum(any(c) for c in correct) / max(len(correct), 1)


# --- the worker -----------------------------------------------------------------------------------


def rl_worker(
    config_dict: dict[str, Any],
    *,
    restart_from: Path | None = None,
    report: Report | None = None,
    console: bool = True,
    tool_executor: ToolExecutor | None = None,
) -> dict[str, Any]:
    """Run (or resume) the RL stage on this rank; returns the final metrics.

    `restart_from`, `report` and `console` are the training loop's (`trainer.loop.train_worker`):
    the checkpoint a restarted worker group continues from, Ray Train's report at each checkpoint,
    and whether this process prints (the Ray job's driver follows the log instead).
    """
    import torch.distributed as dist

    cfg = RLConfig.from_dict(config_dict)
    ranks = Ranks.current(cfg.use_gpu)
    if ranks.device.type == "cpu":
        torch.set_num_threads(cpu_threads(ranks.world_size))
    store = ArtifactStore(Path(cfg.artifacts_dir))
    stage_dir = store.stage_dir(cfg.run, STAGE)
    model, tokenizer, tokenizer_name, optimizers, step, metrics = _build(
        cfg, store, stage_dir, ranks.device, restart_from
    )
    executor = tool_executor if tool_executor is not None else tool_executor_from(cfg.tools)
    generator = EngineDriver.for_model(model, tokenizer, tool_executor=executor, max_in_flight=64)
    train_rows, eval_rows = _rows(cfg)
    # A question longer than the context cannot be asked; it is left out rather than cut.
    fits = model.config.sequence_len - 1
    train_rows = [r for r in train_rows if len(_prompt(tokenizer, r)) < fits]
    eval_rows = [r for r in eval_rows if len(_prompt(tokenizer, r)) < fits]
    if not train_rows:
        raise ConfigError(f"no training question fits the model's context of {fits + 1} tokens")
    telemetry = Telemetry(
        stage=STAGE, run=cfg.run, log_path=stage_dir / LOG_FILE, total_steps=cfg.num_steps,
        enabled=ranks.rank == 0, job_id=cfg.job_id, metrics_port=cfg.metrics_port, console=console,
    )  # fmt: skip
    telemetry.emit(StartEvent(line=f"[{cfg.run}/rl] starting at step {step}/{cfg.num_steps}", step=step,
                              num_steps=cfg.num_steps, workers=ranks.world_size, resumed=step > 0))  # fmt: skip
    per_step = cfg.questions_per_step * ranks.world_size
    name, kind = describe_device(ranks.device)
    hardware = {"device": name, "kind": kind, "devices": ranks.world_size}  # for the report's cost
    try:
        while step < cfg.num_steps:
            maybe_fail(cfg, ranks, step)
            t0 = time.perf_counter()
            first = (step * per_step + ranks.rank * cfg.questions_per_step) % len(train_rows)
            rows = [train_rows[(first + j) % len(train_rows)] for j in range(cfg.questions_per_step)]
            completions, rewards = _rollouts(
                cfg, generator, tokenizer, rows, seed=cfg.seed + step * 7919 + ranks.rank
            )
            advantages = group_advantages(rewards, cfg.samples_per_question)
            lr_mult = cfg.lr_frac * (1 - step / cfg.num_steps)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * lr_mult
            loss, n_tokens = _learn(
                model, optimizers, completions, advantages, tokenizer.bos_id, ranks, cfg.device_batch_rows
            )
            generator.weights_changed()
            step += 1
            totals = ranks.sum_(torch.tensor([sum(rewards), len(rewards), n_tokens], dtype=torch.float64))
            mean_reward = float(totals[0] / totals[1])
            elapsed = time.perf_counter() - t0
            metrics.update(step=step, rl_loss=loss, mean_reward=mean_reward)
            telemetry.progress(
                step=step, loss=loss, lr=lr_mult, tokens_per_s=float(totals[2]) / elapsed, mfu=0.0,
                eta_s=(cfg.num_steps - step) * elapsed, tokens_total=0, print_line=False,
            )  # fmt: skip
            telemetry.emit(RLStepEvent(line=f"[{cfg.run}/rl] step {step}/{cfg.num_steps} | reward {mean_reward:.3f} | "
                            f"loss {loss:+.4f}", step=step, mean_reward=mean_reward, loss=loss,
                            sampled_tokens=float(totals[2])))  # fmt: skip
            last = step == cfg.num_steps
            if (cfg.eval_every_steps and step % cfg.eval_every_steps == 0) or last:
                score = _evaluate(cfg, generator, tokenizer, eval_rows, ranks, seed=cfg.seed + 10**6)
                metrics.update(score)
                telemetry.emit(RLEvalEvent(line=f"[{cfg.run}/rl] step {step} | pass@{cfg.pass_k} "
                                f"{score['pass_at_k']:.3f} | reward {score['eval_reward']:.3f}", step=step, **score))  # fmt: skip
            if step % cfg.checkpoint_every_steps == 0 or last:
                path = None
                if ranks.rank == 0:
                    path = ckpt.save(
                        stage_dir, step, model.state_dict(),
                        optimizer_state={"optimizers": [o.state_dict() for o in optimizers]},
                        config=model.config.to_dict(), data_position={"step": step}, metrics=metrics,
                        extra={"tokenizer": tokenizer_name, "stage": STAGE, "run": cfg.run,
                               "num_steps": cfg.num_steps, "rl_config": cfg.to_dict(),
                               "hardware": hardware},
                    )  # fmt: skip
                    ckpt.prune(stage_dir, cfg.keep_checkpoints)
                    telemetry.emit(CheckpointEvent(step=step, path=str(path)))
                if dist.is_initialized():
                    dist.barrier()
                if report is not None:  # every rank, as in the training loop (trainer.loop._save)
                    report({k: v for k, v in metrics.items() if isinstance(v, int | float)}, path)
    finally:
        generator.close()
        telemetry.close()
    return metrics


def _build(
    cfg: RLConfig, store: ArtifactStore, stage_dir: Path, device: torch.device, restart_from: Path | None
) -> tuple[GPT, Tokenizer, str, list[torch.optim.Optimizer], int, dict[str, Any]]:
    """The model from the checkpoint a restarted worker group is handed, else this stage's latest
    checkpoint (resume), else the SFT checkpoint; optimizers with the SFT learning rates as their
    base (scaled by lr_frac each step)."""
    resume = restart_from or (ckpt.latest(stage_dir) if cfg.resume else None)
    loaded = load_model(
        resume or cfg.parent_checkpoint, store, device=device, with_optimizer=resume is not None
    )
    assert loaded.tokenizer is not None  # load_model insists on one by default
    optimizers = build_optimizers(loaded.model, OptimConfig())
    step, metrics = 0, {}
    if resume is not None:
        loaded.restore_optimizers(optimizers)
        step, metrics = loaded.step, loaded.metrics
    return loaded.model, loaded.tokenizer, loaded.meta["tokenizer"], optimizers, step, metrics


def _rows(cfg: RLConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and held-out questions in GSM8K's schema."""
    if cfg.rows_file:
        train = read_jsonl(cfg.rows_file)
        held = read_jsonl(cfg.eval_rows_file) if cfg.eval_rows_file else train
    elif cfg.task_source == "hub":
        from .tasks.gsm8k import load_gsm8k

        train = [dict(r) for r in load_gsm8k("train").rows]
        held = [dict(r) for r in load_gsm8k("val").rows]
    else:
        from .tasks.base import GeneratedRows
        from .tasks.generated import gsm8k_row

        # streams of their own: neither the SFT rows nor each other
        train = list(GeneratedRows(gsm8k_row, cfg.offline_rows, stream=f"gsm8k/rl-train/{cfg.seed}"))
        held = list(GeneratedRows(gsm8k_row, cfg.eval_questions, stream=f"gsm8k/rl-eval/{cfg.seed}"))
    if not train:
        raise ConfigError("RL has no training questions: check --rows-file or --task-source")
    return train, held[: cfg.eval_questions]


def _prompt(tokenizer: Tokenizer, row: dict[str, Any]) -> list[int]:
    return render_for_completion(tokenizer, Conversation((message("user", row["question"]),)))


def _rollouts(
    cfg: RLConfig,
    generator: EngineDriver,
    tokenizer: Tokenizer,
    rows: Sequence[dict[str, Any]],
    *,
    seed: int,
) -> tuple[list[Completion], list[float]]:
    k = cfg.samples_per_question
    prompts = [_prompt(tokenizer, row) for row in rows for _ in range(k)]
    completions = generator.generate(prompts, _sampling(cfg, tokenizer, seed))
    rewards = [reward(rows[i // k], c) for i, c in enumerate(completions)]
    return completions, rewards


def _sampling(cfg: RLConfig, tokenizer: Tokenizer, seed: int) -> SamplingParams:
    """RL's own sampling: its temperature (exploration, not the chat default), a reply's end, and a
    seed per call (completion i of a call draws with seed + i: `EngineDriver.generate`)."""
    return SamplingParams(
        max_tokens=cfg.max_new_tokens, temperature=float(cfg.temperature), top_k=cfg.top_k, seed=seed,
        stop_token_ids=reply_stop_ids(tokenizer),
    )  # fmt: skip


def _learn(
    model: GPT, optimizers: list[torch.optim.Optimizer], completions: Sequence[Completion],
    advantages: Sequence[float], pad_id: int, ranks: Any, rows: int,
) -> tuple[float, float]:  # fmt: skip
    """One optimizer step on the policy loss; returns (loss, sampled tokens of this rank)."""
    model.train()
    local = float(sum(sum(c.sampled) for c in completions))
    n_global = float(ranks.sum_(torch.tensor([local], dtype=torch.float64))[0])
    total = 0.0
    for b in range(0, len(completions), rows):
        x, y = policy_batch(completions[b : b + rows], pad_id)
        adv = torch.tensor(advantages[b : b + rows], dtype=torch.float32, device=ranks.device)
        device = ranks.device
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=device.type == "cuda"):
            loss = policy_loss(model, x.to(device), y.to(device), adv, n_global)
        loss.backward()
        total += float(loss.detach())
    if ranks.world_size > 1:
        for p in model.parameters():
            if p.grad is not None:
                ranks.sum_(p.grad)
    clip_grad_norm(model, 1.0)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    return float(ranks.sum_(torch.tensor([total], dtype=torch.float64))[0]), local


def _evaluate(
    cfg: RLConfig, generator: EngineDriver, tokenizer: Tokenizer, rows: Sequence[dict[str, Any]],
    ranks: Any, *, seed: int,
) -> dict[str, float]:  # fmt: skip
    """pass@k and mean reward on the held-out questions (this rank's share, summed over ranks)."""
    mine = [row for i, row in enumerate(rows) if i % ranks.world_size == ranks.rank]
    k = cfg.pass_k
    correct: list[list[bool]] = []
    rewards: list[float] = []
    if mine:
        prompts = [_prompt(tokenizer, row) for row in mine for _ in range(k)]
        completions = generator.generate(prompts, _sampling(cfg, tokenizer, seed))
        rewards = [reward(mine[i // k], c) for i, c in enumerate(completions)]
        correct = [[r > 0 for r in rewards[q * k : (q + 1) * k]] for q in range(len(mine))]
    totals = ranks.sum_(
        torch.tensor(
            [pass_at_k(correct) * len(correct), len(correct), sum(rewards), len(rewards)], dtype=torch.float64
        )
    )
    return {
        "pass_at_k": float(totals[0] / max(float(totals[1]), 1.0)),
        "eval_reward": float(totals[2] / max(float(totals[3]), 1.0)),
        "pass_k": float(k),
    }


# --- the Ray shell --------------------------------------------------------------------------------


def prepare_stage(cfg: RLConfig) -> Path:
    """The stage directory; emptied of checkpoints and log first when the run starts over."""
    from .driver import clear_stage

    stage_dir = ArtifactStore(Path(cfg.artifacts_dir)).stage_dir(cfg.run, STAGE)
    if not cfg.resume:
        clear_stage(stage_dir)
    return stage_dir


def run_rl(cfg: RLConfig) -> dict[str, Any]:
    """Run the stage as a Ray Train job of `cfg.workers` workers (Ray must be running), launched like
    the other stages (`trainer.driver.run_on_ray`): the same process groups, the same restarts."""
    from .driver import run_on_ray

    stage_dir = prepare_stage(cfg)
    return run_on_ray(
        rl_worker, cfg.to_dict(), name=f"{cfg.run}-{STAGE}", stage_dir=stage_dir, workers=cfg.workers,
        use_gpu=cfg.use_gpu, max_failures=cfg.max_failures,
    )  # fmt: skip
