"""The one train loop every stage shares (base, mid, sft), run by each worker of a job.

`train_worker(config_dict)` is the whole life of one rank: load the tokenizer, build or restore the
model, optimizers and data position, then step → (log, validate, sample, checkpoint) until done.
Ray Train calls it on every worker (`trainer.driver`); a 1-worker local run calls it directly. With
torch.distributed initialised (gloo on CPU, NCCL on GPU) gradients are summed across ranks, with
it absent the same code runs alone.

Under data parallelism each rank computes the summed loss of its micro-batches divided by the
number of counted targets in the *global* batch, and gradients are all-reduced with a sum: the
result is the gradient of the global mean loss, whatever the number of ranks, and a batch whose
targets are all masked contributes exactly zero.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.events import CheckpointEvent, DoneEvent, StartEvent
from chatforge.contracts.training import RLConfig, TrainConfig
from chatforge.loading import load_model
from chatforge.model import GPT, GPTConfig, autocast_dtype, token_budget
from chatforge.tokenizer import Tokenizer
from trainer.eval.bpb import bits_per_byte_of, bpb_totals

from .data import StepLoader, merge_positions
from .errors import TrainError
from .optim import apply_schedule, build_optimizers, clip_grad_norm
from .stages import StageData, stage_data
from .telemetry import LOG_FILE, Telemetry, device_peak


@dataclass
class Ranks:
    """Who this process is among the workers, and the collectives (no-ops when alone)."""

    rank: int
    world_size: int
    device: torch.device

    @classmethod
    def current(cls, use_gpu: bool) -> Ranks:
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        if use_gpu and torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        return cls(rank, world, device)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


Report = Callable[[dict[str, float], Path | None], None]


def train_worker(
    config_dict: dict[str, Any],
    *,
    restart_from: Path | None = None,
    report: Report | None = None,
    console: bool = True,
) -> dict[str, Any]:
    """Train one stage on this rank; returns the final metrics (the same on every rank).

    `restart_from` is the checkpoint a restarted worker group continues from; `report(metrics,
    checkpoint path or None)` is called on every rank at each checkpoint (Ray Train's report).
    `console=False` leaves printing to whoever follows the stage's log (the Ray job's driver).
    """
    cfg = TrainConfig.from_dict(config_dict)
    ranks = Ranks.current(cfg.use_gpu)
    if ranks.device.type == "cpu":
        torch.set_num_threads(cpu_threads(ranks.world_size))
    torch.manual_seed(cfg.seed)
    store = ArtifactStore(Path(cfg.artifacts_dir))
    stage_dir = store.stage_dir(cfg.run, cfg.stage)
    try:
        tokenizer = Tokenizer.load(store.find_tokenizer(cfg.tokenizer_name))
    except LookupError as e:
        raise TrainError(f"{e}: run the tokenizer stage first (chatforge train tokenizer)") from None

    model, optimizers, state = _build(cfg, store, stage_dir, tokenizer, ranks, restart_from)
    # compiled for training steps on CUDA (fused kernels); CPU compiles take longer than tiny runs
    forward = torch.compile(model) if cfg.compile and ranks.device.type == "cuda" else model
    data = stage_data(cfg, tokenizer)
    num_steps = cfg.num_steps or _default_steps(cfg, model, data)
    loader = _loader(cfg, data, ranks, tokenizer, position=state["data_position"], split="train")
    telemetry = Telemetry(
        stage=cfg.stage, run=cfg.run, log_path=stage_dir / LOG_FILE, total_steps=num_steps,
        enabled=ranks.rank == 0, job_id=cfg.job_id, metrics_port=cfg.metrics_port, console=console,
    )  # fmt: skip
    step = start_step = state["step"]
    device = device_peak(ranks.device, cfg.peak_flops)  # the CPU probe runs before any step
    hardware = {"device": device.name, "kind": device.kind, "devices": ranks.world_size,
                "peak_flops_per_device": device.flops, "peak_source": device.source}  # fmt: skip
    telemetry.emit(StartEvent(
        line=f"[{cfg.run}/{cfg.stage}] {'resuming at' if step else 'starting'} step {step}/{num_steps}: "
        f"{model.num_params():,} params, {ranks.world_size} worker(s) on {ranks.device.type}, "
        f"{cfg.total_batch_tokens:,} tokens/step; MFU against {device.flops / 1e12:.3g} TFLOP/s per device "
        f"({device.source})",
        step=step, num_steps=num_steps, workers=ranks.world_size, resumed=step > 0, init=state["init"],
    ))  # fmt: skip
    peak = device.flops * ranks.world_size
    flops_per_token = model.flops_per_token()
    metrics: dict[str, Any] = dict(state["metrics"])
    t_last, tokens_since, steps_since = time.perf_counter(), 0, 0
    while step < num_steps:
        maybe_fail(cfg, ranks, step)
        lr_mult = apply_schedule(optimizers, step, num_steps, cfg.optim)
        loss, n_tokens = train_step(model, optimizers, loader.next_step(), ranks, cfg, forward=forward)
        step += 1
        tokens_since += n_tokens
        steps_since += 1
        metrics.update(step=step, train_loss=loss)
        is_log = step % max(cfg.log_every_steps, 1) == 0 or step == num_steps
        if is_log:
            elapsed = time.perf_counter() - t_last
            tps = tokens_since / max(elapsed, 1e-9)
            telemetry.progress(
                step=step, loss=loss, lr=cfg.optim.matrix_lr * lr_mult, tokens_per_s=tps,
                mfu=flops_per_token * tps / peak, eta_s=(num_steps - step) * elapsed / steps_since,
                tokens_total=(step - start_step) * cfg.total_batch_tokens, print_line=True,
            )  # fmt: skip
            t_last, tokens_since, steps_since = time.perf_counter(), 0, 0
        last = step == num_steps
        if (cfg.eval_every_steps and step % cfg.eval_every_steps == 0) or last:
            metrics["val_bpb"] = evaluate_bpb(model, cfg, data, ranks, tokenizer)
            telemetry.validation(step=step, bpb=metrics["val_bpb"])
        if (cfg.sample_every_steps and step % cfg.sample_every_steps == 0) or last:
            if ranks.rank == 0:
                telemetry.samples(
                    step=step, samples=sample_completions(model, tokenizer, data.sample_prompts)
                )
        if (cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0) or last:
            _save(
                cfg, stage_dir, step, num_steps, model, optimizers, loader, ranks, metrics, telemetry, report,
                hardware=hardware,
            )  # fmt: skip
    line = f"[{cfg.run}/{cfg.stage}] done at step {step}: {_brief(metrics)}"
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    telemetry.emit(DoneEvent(line=line, step=step, metrics=numbers))
    telemetry.close()
    return metrics


def cpu_threads(workers: int) -> int:
    """Torch threads per CPU worker: the cores shared out, or 1 when the machine is oversubscribed.

    Every op is an OpenMP region whose threads wait for each other; when other processes keep the
    cores busy, one descheduled thread stalls the rest for a scheduler slice. Measured on a 2-core
    machine at load 8 (d2 model, 4k-token steps): 2 threads 400 tok/s, 1 thread 3,400 tok/s.
    """
    cores = os.cpu_count() or 1
    share = max(1, cores // max(workers, 1))
    busy = os.getloadavg()[0] >= cores if hasattr(os, "getloadavg") else False
    return 1 if busy else share


# --- one step ----------------------------------------------------------------------------------


def train_step(
    model: GPT,
    optimizers: list[torch.optim.Optimizer],
    micro_batches: list[tuple[torch.Tensor, torch.Tensor]],
    ranks: Ranks,
    cfg: TrainConfig,
    *,
    forward: Callable[..., torch.Tensor] | None = None,
    precision: torch.dtype | None = None,
) -> tuple[float, int]:
    """Accumulate this rank's micro-batches, all-reduce, step; returns (global mean loss, tokens).

    `forward` is the model as called for the loss (a torch.compile'd wrapper of the same weights).
    `precision` is the autocast dtype, by default `autocast_dtype` (bfloat16 on CUDA, none on CPU);
    float32 turns autocast off, which the GPU check uses to compare a CUDA run with a CPU golden."""
    forward = forward or model
    device = ranks.device
    precision = precision or autocast_dtype(device)
    counted = sum(int((y != -1).sum()) for _, y in micro_batches)
    n_valid = ranks.sum_(torch.tensor([counted], dtype=torch.float64, device=device)).item()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in micro_batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=precision, enabled=precision != torch.float32):
            loss = forward(x, y, loss_reduction="sum")
        (loss / max(n_valid, 1.0)).backward()
        loss_sum += loss.detach().double()
    _all_reduce_grads(model, ranks)
    loss_total = ranks.sum_(loss_sum).item()
    if cfg.optim.grad_clip > 0:
        clip_grad_norm(model, cfg.optim.grad_clip)
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
    tokens = sum(x.numel() for x, _ in micro_batches) * ranks.world_size
    return loss_total / max(n_valid, 1.0), tokens


def _all_reduce_grads(model: GPT, ranks: Ranks) -> None:
    """Sum gradients over ranks in one flat buffer (one collective instead of one per tensor)."""
    if ranks.world_size == 1:
        return
    params = list(model.parameters())
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    ranks.sum_(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
        offset += n


# --- validation and samples ----------------------------------------------------------------------


@torch.no_grad()
def evaluate_bpb(model: GPT, cfg: TrainConfig, data: StageData, ranks: Ranks, tokenizer: Tokenizer) -> float:
    """Bits per byte on the first `eval_batches` steps of validation data: comparable across
    tokenizers, since it divides by the UTF-8 bytes of the targets (special tokens count 0 bytes)."""
    model.eval()
    loader = _loader(cfg, data, ranks, tokenizer, position=None, split="val")
    token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.float64, device=ranks.device)
    totals = torch.zeros(2, dtype=torch.float64, device=ranks.device)  # nats, bytes
    for _ in range(cfg.eval_batches):
        for x, y in loader.next_step():
            x, y = x.to(ranks.device), y.to(ranks.device)
            with torch.autocast(
                ranks.device.type, dtype=autocast_dtype(ranks.device), enabled=ranks.device.type == "cuda"
            ):
                losses = model(x, y, loss_reduction="none")
            totals += torch.tensor(
                bpb_totals(losses, y, token_bytes), dtype=torch.float64, device=ranks.device
            )
    ranks.sum_(totals)
    model.train()
    return bits_per_byte_of(float(totals[0]), float(totals[1]))


@torch.no_grad()
def sample_completions(
    model: GPT, tokenizer: Tokenizer, prompts: list[list[int]], max_tokens: int = 24
) -> list[tuple[str, str]]:
    """Greedy completions of a few prompts (token ids), decoded; shows what the model has learned."""
    model.eval()
    stops = (tokenizer.bos_id, tokenizer.special_id("<|assistant_end|>"))
    out = []
    for ids in prompts:
        new = list(model.generate(ids, max_tokens, temperature=0.0, stop_ids=stops))
        out.append((tokenizer.decode(ids[1:]), tokenizer.decode(new)))
    model.train()
    return out


# --- building, restoring, saving ---------------------------------------------------------------


def _build(
    cfg: TrainConfig,
    store: ArtifactStore,
    stage_dir: Path,
    tokenizer: Tokenizer,
    ranks: Ranks,
    restart_from: Path | None,
) -> tuple[GPT, list[torch.optim.Optimizer], dict[str, Any]]:
    """The model and optimizers, from this stage's own checkpoint (resume), the parent stage's
    (weights only), or random init; plus the step, data position and metrics to continue from."""
    resume_path = _resume_path(cfg, stage_dir, restart_from)
    source = resume_path or _parent_path(cfg, store)
    state: dict[str, Any] = {"step": 0, "data_position": None, "metrics": {}, "init": str(source or "random")}
    if source is None:
        gpt_config = GPTConfig.from_depth(
            cfg.depth, tokenizer.vocab_size, sequence_len=cfg.sequence_len, kv_group=cfg.kv_group,
            window_pattern=cfg.window_pattern, value_embeds=cfg.value_embeds,
        )  # fmt: skip
        model = GPT(gpt_config).to(ranks.device)
        return model, build_optimizers(model, cfg.optim), state
    trained_with = ckpt.read_meta(source).get("tokenizer")
    if trained_with not in (None, cfg.tokenizer_name):
        raise TrainError(
            f"checkpoint {source} was trained with tokenizer {trained_with!r}, "
            f"not {cfg.tokenizer_name!r}: pass --tokenizer {trained_with}"
        )
    # the loader checks the tokenizer against the checkpoint's vocabulary
    loaded = load_model(
        source, store, device=ranks.device, tokenizer=tokenizer, with_optimizer=resume_path is not None,
        sequence_len=cfg.sequence_len,
    )  # fmt: skip
    model = loaded.model.train()
    optimizers = build_optimizers(model, cfg.optim)
    if resume_path is not None:
        loaded.restore_optimizers(optimizers)
        state.update(step=loaded.step, data_position=loaded.data_position, metrics=loaded.metrics)
    return model, optimizers, state


def _resume_path(cfg: TrainConfig, stage_dir: Path, restart_from: Path | None) -> Path | None:
    """A restarted worker group always resumes from the checkpoint it is handed; a new job
    resumes from the stage's latest checkpoint when `resume` is set."""
    if restart_from is not None:
        return restart_from
    return ckpt.latest(stage_dir) if cfg.resume else None


def _parent_path(cfg: TrainConfig, store: ArtifactStore) -> Path | None:
    name = cfg.parent_checkpoint
    if not name:
        return None
    try:
        return store.resolve_checkpoint(name)
    except LookupError as e:
        raise TrainError(f"stage {cfg.stage} starts from {name!r}: {e}; train that stage first") from None


def _save(
    cfg: TrainConfig, stage_dir: Path, step: int, num_steps: int, model: GPT,
    optimizers: list[torch.optim.Optimizer], loader: StepLoader, ranks: Ranks,
    metrics: dict[str, Any], telemetry: Telemetry, report: Report | None, *, hardware: dict[str, Any],
) -> None:  # fmt: skip
    """Rank 0 writes the checkpoint to the artifact store (with the hardware it ran on and the peak
    its MFU was measured against, for the report card); every rank then calls `report`."""
    position = merge_positions(ranks.gather(loader.position()))
    path = None
    if ranks.rank == 0:
        path = ckpt.save(
            stage_dir, step, model.state_dict(),
            optimizer_state={"optimizers": [o.state_dict() for o in optimizers]},
            config=model.config.to_dict(), data_position=position, metrics=metrics,
            extra={"tokenizer": cfg.tokenizer_name, "stage": cfg.stage, "run": cfg.run,
                   "num_steps": num_steps, "train_config": cfg.to_dict(), "hardware": hardware},
        )  # fmt: skip
        ckpt.prune(stage_dir, cfg.keep_checkpoints)
        telemetry.emit(CheckpointEvent(step=step, path=str(path)))
    if report is not None:
        report({k: v for k, v in metrics.items() if isinstance(v, int | float)}, path)


def _default_steps(cfg: TrainConfig, model: GPT, data: StageData) -> int:
    """Base: the Chinchilla token budget; mid and sft: about one pass over their data."""
    if cfg.stage == "base":
        budget = token_budget(model.budget_params(), cfg.tokens_per_param)
    else:
        budget = data.approx_tokens
    return max(1, budget // cfg.total_batch_tokens)


def _loader(
    cfg: TrainConfig, data: StageData, ranks: Ranks, tokenizer: Tokenizer, *, position: Any, split: str
) -> StepLoader:
    return StepLoader(
        data.train if split == "train" else data.val,
        rank=ranks.rank,
        world_size=ranks.world_size,
        n_slots=cfg.micro_batches_per_step,
        rows_per_micro=cfg.device_batch_rows,
        sequence_len=cfg.sequence_len,
        pad_id=tokenizer.bos_id,
        packer=data.packer,
        position=position,
    )


def _brief(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def maybe_fail(cfg: TrainConfig | RLConfig, ranks: Ranks, step: int) -> None:
    """Fault injection for the resume tests (training and RL): the last rank dies once, hard, at
    `fail_at_step`, unless `fail_marker` says it already did."""
    if ranks.world_size == 1 or not cfg.fail_at_step or step != cfg.fail_at_step:
        return
    if ranks.rank != ranks.world_size - 1:
        return
    marker = Path(cfg.fail_marker)
    if cfg.fail_marker and not marker.exists():
        marker.write_text(f"rank {ranks.rank} exited at step {step}\n", encoding="utf-8")
        os._exit(1)
