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
workers as a Ray Train job (rollouts and learner on the same workers).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.chat import Conversation, message, render_for_completion
from chatforge.contracts.events import CheckpointEvent, RLEvalEvent, RLStepEvent, StartEvent
from chatforge.contracts.training import RL_STAGE as STAGE
from chatforge.contracts.training import ConfigError, OptimConfig, RLConfig
from chatforge.model import GPT, GPTConfig, autocast_dtype
from chatforge.tokenizer import Tokenizer
from chatforge.tools import ToolExecutor, tool_executor_from

from .eval.chat_eval import extract_number, read_jsonl, same_number
from .eval.rollout import Completion, EngineGenerator, GenerationParams
from .optim import build_optimizers, clip_grad_norm
from .telemetry import LOG_FILE, Telemetry

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


def rl_worker(config_dict: dict[str, Any], *, tool_executor: ToolExecutor | None = None) -> dict[str, Any]:
    """Run (or resume) the RL stage on this rank; returns the final metrics."""
    import torch.distributed as dist

    from .loop import Ranks

    cfg = RLConfig.from_dict(config_dict)
    ranks = Ranks.current(cfg.use_gpu)
    store = ArtifactStore(Path(cfg.artifacts_dir))
    stage_dir = store.stage_dir(cfg.run, STAGE)
    model, tokenizer, tokenizer_name, optimizers, step, metrics = _build(cfg, store, stage_dir, ranks.device)
    executor = tool_executor if tool_executor is not None else tool_executor_from(cfg.tools)
    generator = EngineGenerator(model, tokenizer, tool_executor=executor, max_concurrent=64)
    train_rows, eval_rows = _rows(cfg)
    # A question longer than the context cannot be asked; it is left out rather than cut.
    fits = model.config.sequence_len - 1
    train_rows = [r for r in train_rows if len(_prompt(tokenizer, r)) < fits]
    eval_rows = [r for r in eval_rows if len(_prompt(tokenizer, r)) < fits]
    if not train_rows:
        raise ConfigError(f"no training question fits the model's context of {fits + 1} tokens")
    telemetry = Telemetry(
        stage=STAGE, run=cfg.run, log_path=stage_dir / LOG_FILE, total_steps=cfg.num_steps,
        enabled=ranks.rank == 0, job_id=cfg.job_id, metrics_port=cfg.metrics_port,
    )  # fmt: skip
    telemetry.emit(StartEvent(line=f"[{cfg.run}/rl] starting at step {step}/{cfg.num_steps}", step=step,
                              num_steps=cfg.num_steps, workers=ranks.world_size, resumed=step > 0))  # fmt: skip
    per_step = cfg.questions_per_step * ranks.world_size
    try:
        while step < cfg.num_steps:
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
                if ranks.rank == 0:
                    path = ckpt.save(
                        stage_dir, step, model.state_dict(),
                        optimizer_state={"optimizers": [o.state_dict() for o in optimizers]},
                        config=model.config.to_dict(), data_position={"step": step}, metrics=metrics,
                        extra={"tokenizer": tokenizer_name, "stage": STAGE, "run": cfg.run,
                               "num_steps": cfg.num_steps, "rl_config": cfg.to_dict()},
                    )  # fmt: skip
                    ckpt.prune(stage_dir, cfg.keep_checkpoints)
                    telemetry.emit(CheckpointEvent(step=step, path=str(path)))
                if dist.is_initialized():
                    dist.barrier()
    finally:
        generator.close()
        telemetry.close()
    return metrics


def _build(
    cfg: RLConfig, store: ArtifactStore, stage_dir: Path, device: torch.device
) -> tuple[GPT, Tokenizer, str, list[torch.optim.Optimizer], int, dict[str, Any]]:
    """The model from this stage's latest checkpoint (resume) or the SFT checkpoint; optimizers with
    the SFT learning rates as their base (scaled by lr_frac each step)."""
    resume = ckpt.latest(stage_dir) if cfg.resume else None
    source = resume or store.resolve_checkpoint(cfg.parent_checkpoint)
    loaded = ckpt.load(source, with_optimizer=resume is not None)
    tokenizer_name = loaded.meta.get("tokenizer") or cfg.run
    tokenizer = Tokenizer.load(store.find_tokenizer(tokenizer_name))
    model = GPT(GPTConfig.from_dict(loaded.config))
    ckpt.load_state_into(model, loaded.model_state, source=loaded.path)
    model.to(device)
    optimizers = build_optimizers(model, OptimConfig())
    step, metrics = 0, {}
    if resume is not None:
        saved = (loaded.optimizer_state or {}).get("optimizers", [])
        if len(saved) != len(optimizers):
            raise ckpt.CheckpointError(f"checkpoint {resume} has no optimizer state to resume RL from")
        for opt, sd in zip(optimizers, saved, strict=True):
            opt.load_state_dict(sd)
        step, metrics = loaded.step, dict(loaded.meta.get("metrics", {}))
    return model, tokenizer, tokenizer_name, optimizers, step, metrics


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
    generator: EngineGenerator,
    tokenizer: Tokenizer,
    rows: Sequence[dict[str, Any]],
    *,
    seed: int,
) -> tuple[list[Completion], list[float]]:
    k = cfg.samples_per_question
    prompts = [_prompt(tokenizer, row) for row in rows for _ in range(k)]
    params = GenerationParams(
        max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, seed=seed
    )
    completions = generator.generate(prompts, params)
    rewards = [reward(rows[i // k], c) for i, c in enumerate(completions)]
    return completions, rewards


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
    cfg: RLConfig, generator: EngineGenerator, tokenizer: Tokenizer, rows: Sequence[dict[str, Any]],
    ranks: Any, *, seed: int,
) -> dict[str, float]:  # fmt: skip
    """pass@k and mean reward on the held-out questions (this rank's share, summed over ranks)."""
    mine = [row for i, row in enumerate(rows) if i % ranks.world_size == ranks.rank]
    k = cfg.pass_k
    correct: list[list[bool]] = []
    rewards: list[float] = []
    if mine:
        prompts = [_prompt(tokenizer, row) for row in mine for _ in range(k)]
        params = GenerationParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                  top_k=cfg.top_k, seed=seed)  # fmt: skip
        completions = generator.generate(prompts, params)
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
    """Run the stage as a Ray Train job of `cfg.workers` workers (Ray must be running). Process
    groups are set up as for the other stages (`trainer.driver`): NCCL through Ray Train's torch
    backend on GPUs, gloo through a rendezvous file on CPUs (no TCP store on every interface)."""
    from ray.train import BackendConfig, RunConfig, ScalingConfig

    stage_dir = prepare_stage(cfg)
    storage = stage_dir.parent / "ray"
    cpus = max(1, (os.cpu_count() or 1) // cfg.workers)
    env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": str(cpus)}
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    worker_config = {"rl": cfg.to_dict(), "env": env, "rendezvous_dir": str(storage)}
    scaling = ScalingConfig(
        num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker=None if cfg.use_gpu else {"CPU": 1}
    )
    run_config = RunConfig(
        name=f"{cfg.run}-rl-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}", storage_path=str(storage)
    )
    if cfg.use_gpu:
        from ray.train.torch import TorchConfig, TorchTrainer

        trainer: Any = TorchTrainer(_ray_worker, train_loop_config=worker_config, torch_config=TorchConfig(backend="nccl"),
                                    scaling_config=scaling, run_config=run_config)  # fmt: skip
    else:
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        worker_config["rendezvous"] = "file"
        trainer = DataParallelTrainer(_ray_worker, train_loop_config=worker_config, backend_config=BackendConfig(),
                                      scaling_config=scaling, run_config=run_config)  # fmt: skip
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    latest = ckpt.latest(stage_dir)
    return ckpt.read_meta(latest)["metrics"] if latest else {}


def _ray_worker(config: dict[str, Any]) -> None:
    import ray.train
    import torch.distributed as dist

    from trainer.driver import join_process_group_by_file

    os.environ.update(config["env"])
    torch.set_num_threads(int(config["env"]["OMP_NUM_THREADS"]))
    context = ray.train.get_context()
    joined = config.get("rendezvous") == "file" and context.get_world_size() > 1
    if joined:
        join_process_group_by_file(
            Path(config["rendezvous_dir"]), context.get_world_rank(), context.get_world_size()
        )
    try:
        metrics = rl_worker(config["rl"])
    finally:
        if joined:
            dist.destroy_process_group()
    ray.train.report({k: v for k, v in metrics.items() if isinstance(v, int | float) and math.isfinite(v)})
