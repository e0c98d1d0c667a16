"""Training throughput: our GPT against Hugging Face `LlamaForCausalLM` of the same size.

Both models get the same layers, width, heads, vocabulary, sequence length, batch and dtype, and
the same parameter count: Llama's gated MLP has three matrices, so its hidden size is 8/3 of the
width where ours (ReLU², two matrices) is 4x; the MLP FLOPs are then equal too. One training step
is forward + backward + optimizer step. The headline compares the models, so both use AdamW; a
third line times ours with the optimizers it trains with (Muon + AdamW, `trainer.optim`), whose
Newton–Schulz cost is per step, not per token, and shrinks relative to the step as batches grow.
All three are timed alternately in the same process.

    python bench/train_throughput.py --quick          # CPU, < 1 minute
    python bench/train_throughput.py --device cuda --depth 12 --compile   # MFU on a GPU

The last line is the headline: our tokens/s and the ratio to Llama's (goal >= 1.5x on CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from chatforge.contracts.training import OptimConfig  # noqa: E402
from chatforge.model import GPT, GPTConfig  # noqa: E402
from trainer.loop import cpu_threads  # noqa: E402
from trainer.optim import build_optimizers  # noqa: E402
from trainer.telemetry import peak_flops  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small model and few steps (< 1 minute on CPU)")
    p.add_argument(
        "--depth", type=int, default=None, help="model depth (default: 4 quick, 6 full; 12 on GPU)"
    )
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary (default: 8192 CPU, 65536 GPU)")
    p.add_argument(
        "--sequence-len", type=int, default=None, help="tokens per row (default: 256 CPU, 2048 GPU)"
    )
    p.add_argument("--batch", type=int, default=None, help="rows per step (default: 4 quick, 8 CPU, 16 GPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default: 3 quick, 8 full)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default: the trainer's rule, cpu_threads)"
    )
    args = p.parse_args()

    torch.set_num_threads(args.threads or cpu_threads(1))
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    depth = args.depth or (12 if gpu else 2 if args.quick else 6)
    vocab = args.vocab_size or (65_536 if gpu else 4096 if args.quick else 8192)
    seq = args.sequence_len or (2048 if gpu else 256)
    batch = args.batch or (16 if gpu else 4 if args.quick else 8)
    steps = args.steps or (3 if args.quick else 8)
    dtype = torch.bfloat16 if gpu else torch.float32
    torch.manual_seed(0)

    cfg = GPTConfig.from_depth(depth, vocab, sequence_len=seq)
    ours = GPT(cfg).to(device)
    llama = _llama(cfg).to(device)
    print(
        f"d{depth}: width {cfg.n_embd}, {cfg.n_head} heads, vocab {vocab}, {batch}x{seq} tokens/step, "
        f"{str(dtype).removeprefix('torch.')} on {device.type} ({torch.get_num_threads()} threads); "
        f"params ours {ours.num_params():,} vs llama {sum(q.numel() for q in llama.parameters()):,}"
    )
    steps_by_name = {
        "ours": _step_fn(ours, [_adamw(ours)], dtype, device, args.compile, hf=False),
        "llama": _step_fn(llama, [_adamw(llama)], dtype, device, args.compile, hf=True),
        "ours_muon": _step_fn(
            ours, build_optimizers(ours, OptimConfig()), dtype, device, args.compile, hf=False
        ),
    }

    x = torch.randint(0, vocab, (batch, seq), device=device)
    y = torch.randint(0, vocab, (batch, seq), device=device)
    for fn in steps_by_name.values():  # warm up (and compile)
        for _ in range(1 if args.quick and not args.compile else 2):
            fn(x, y)
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):  # alternate, so load changes on a shared machine hit all alike
        for name, fn in steps_by_name.items():
            times[name].append(_timed(fn, x, y, device))
    tps = {k: batch * seq / sorted(v)[len(v) // 2] for k, v in times.items()}  # median step time
    mfu = ours.flops_per_token() * tps["ours"] / peak_flops(device)
    print(
        f"ours:  {tps['ours']:,.0f} tok/s (MFU {100 * mfu:.1f}% of {peak_flops(device) / 1e12:.2f} TFLOP/s peak)"
    )
    print(f"llama: {tps['llama']:,.0f} tok/s")
    print(f"ours with Muon + AdamW: {tps['ours_muon']:,.0f} tok/s")
    goal = "MFU >= 45%" if gpu else ">= 1.5x"
    print(
        f"train_throughput: {tps['ours']:,.0f} tokens/s ({tps['ours'] / tps['llama']:.2f}x vs transformers LlamaForCausalLM; goal {goal})"
    )


def _adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.8, 0.95), eps=1e-10)


def _llama(cfg: GPTConfig) -> torch.nn.Module:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(  # type: ignore[call-arg]  # attn_implementation: a config kwarg, untyped
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.n_embd,
            intermediate_size=8
            * cfg.n_embd
            // 3,  # 3 matrices of width x 8/3 width = our 2 of width x 4 width
            num_hidden_layers=cfg.n_layer,
            num_attention_heads=cfg.n_head,
            num_key_value_heads=cfg.n_kv_head,
            max_position_embeddings=cfg.sequence_len,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    )


def _step_fn(model, optimizers, dtype, device, compile_: bool, *, hf: bool):
    forward = torch.compile(model) if compile_ else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(input_ids=x, labels=y).loss if hf else forward(x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)

    return step


def _timed(fn, x, y, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
