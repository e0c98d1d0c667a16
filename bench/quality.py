"""Model quality per token: the architecture options (docs/model.md) against the baseline GPT.

Each variant is trained from scratch on the bundled corpus (data/corpus) by the trainer itself
(`trainer.driver.run_stage`, as `chatforge train base --local` runs it): same tokenizer (trained here
first), depth, context, batch, step count, seed and data order, so every run sees the same tokens;
then the trainer's validation bits per byte on the same validation batches. The reference is the
baseline trained in the same run; a ratio under 1 means the option learnt more from the same tokens.

    python bench/quality.py --quick                  # CPU, < 1 minute: exercises every variant
    python bench/quality.py --depth 4                # CPU, minutes
    python bench/quality.py --device cuda --depth 12 # a GPU: a few minutes (bench/gpu_check.py runs it)

Variants: baseline; window (--window-pattern SSSL: three short layers of a quarter of the context,
then a long one; the last layer is always long); value_embeds; gqa (two query heads per key/value
head, where the head count is even); all (the three together). The last lines are the bench/
headline format, one per option and the combination last:

    quality_window: 1.912 bpb (0.998x vs baseline; goal <=1.0x)
    quality_bpb: 1.905 bpb (0.994x vs baseline; goal <=1.0x)

Short runs are noisy (a few 0.1% between seeds at the quick size): the quick mode checks that every
variant trains, not which one wins; docs/model.md records the numbers that decide defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "inference-svc")]

VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "window": {"window_pattern": "SSSL"},
    "value_embeds": {"value_embeds": True},
    "gqa": {"kv_group": 2},
    "all": {"window_pattern": "SSSL", "value_embeds": True, "kv_group": 2},
}


@dataclass(frozen=True)
class Sizes:
    depth: int
    vocab_size: int
    sequence_len: int
    rows: int  # rows per optimizer step (one micro-batch)
    steps: int
    eval_batches: int
    tokenizer_chars: int


def sizes_for(device: str, quick: bool, depth: int | None) -> Sizes:
    if device == "cuda":
        s = Sizes(depth=12, vocab_size=32_768, sequence_len=1024, rows=32, steps=120, eval_batches=8,
                  tokenizer_chars=20_000_000)  # fmt: skip
        if quick:
            s = Sizes(**{**s.__dict__, "steps": 40, "eval_batches": 4})
    elif quick:
        s = Sizes(depth=2, vocab_size=1024, sequence_len=128, rows=8, steps=30, eval_batches=2,
                  tokenizer_chars=2_000_000)  # fmt: skip
    else:
        s = Sizes(depth=4, vocab_size=4096, sequence_len=256, rows=16, steps=200, eval_batches=8,
                  tokenizer_chars=10_000_000)  # fmt: skip
    return Sizes(**{**s.__dict__, "depth": depth or s.depth})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="tiny sizes: every variant trains (< 1 minute on CPU)"
    )
    p.add_argument("--depth", type=int, default=None, help="model depth (default: 2 quick, 4 CPU, 12 GPU)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per variant (default: by mode)")
    p.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset (baseline always runs)"
    )
    p.add_argument("--corpus", default=str(REPO / "data" / "corpus"), help="FineWeb-schema parquet directory")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of every variant (for the noise)")
    p.add_argument("--json", default="", help="also write the results to this file")
    args = p.parse_args()
    sizes = sizes_for(args.device, args.quick, args.depth)
    if args.steps:
        sizes = Sizes(**{**sizes.__dict__, "steps": args.steps})
    names = ["baseline"] + [v for v in args.variants.split(",") if v and v != "baseline"]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if sizes.depth < 1 or sizes.steps < 1:
        raise SystemExit("--depth and --steps must be >= 1")
    if not (Path(args.corpus) / "val_00000.parquet").is_file():
        raise SystemExit(f"no corpus in {args.corpus}: `make data` builds data/corpus")
    results = run_quality(sizes, names, device=args.device, corpus_dir=args.corpus, seed=args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(headline_lines(results)))


def run_quality(
    sizes: Sizes,
    names: list[str],
    *,
    device: str,
    corpus_dir: str,
    work: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the tokenizer, then each variant for the same tokens; their val bpb and ratios."""
    from chatforge import checkpoint
    from chatforge.artifacts import ArtifactStore
    from chatforge.contracts.training import TokenizerConfig, TrainConfig
    from chatforge.model import GPTConfig
    from trainer.driver import run_stage
    from trainer.stages.tokenizer import train_tokenizer

    results: dict[str, Any] = {"sizes": sizes.__dict__, "device": device, "seed": seed, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="quality_") as tmp:
        artifacts = work or Path(tmp)
        train_tokenizer(
            TokenizerConfig(name="quality", artifacts_dir=str(artifacts), corpus_dir=corpus_dir,
                            vocab_size=sizes.vocab_size, max_chars=sizes.tokenizer_chars),
            redo=True,
        )  # fmt: skip
        heads = GPTConfig.from_depth(sizes.depth, sizes.vocab_size).n_head
        for i, name in enumerate(names):
            options = dict(VARIANTS[name])
            if options.get("kv_group", 1) > 1 and heads % options["kv_group"]:
                print(
                    f"[quality] {name}: skipped, {heads} heads at depth {sizes.depth} do not split in pairs"
                )
                continue
            print(f"[quality] variant {i + 1}/{len(names)}: {name} {options or '(no options)'}", flush=True)
            cfg = TrainConfig(
                stage="base", run=f"quality-{name}", artifacts_dir=str(artifacts), tokenizer="quality",
                depth=sizes.depth, sequence_len=sizes.sequence_len, device_batch_rows=sizes.rows,
                total_batch_tokens=sizes.rows * sizes.sequence_len, num_steps=sizes.steps,
                corpus_dir=corpus_dir, log_every_steps=max(1, sizes.steps // 4), eval_every_steps=0,
                eval_batches=sizes.eval_batches, sample_every_steps=0, checkpoint_every_steps=0,
                keep_checkpoints=1, use_gpu=device == "cuda", compile=False, resume=False, seed=seed,
                **options,
            )  # fmt: skip
            t0 = time.perf_counter()
            metrics = run_stage(cfg, launcher="local")
            saved = checkpoint.latest(ArtifactStore(artifacts).stage_dir(cfg.run, cfg.stage))
            assert saved is not None, f"the {name} run saved no checkpoint"
            model = checkpoint.read_meta(saved)["config"]  # what was trained, as the checkpoint says
            results["variants"][name] = {
                "options": options,
                "model": {
                    k: model.get(k)
                    for k in ("n_head", "n_kv_head", "window_pattern", "short_window", "value_embeds")
                },
                "val_bpb": float(metrics["val_bpb"]),
                "train_loss": float(metrics["train_loss"]),
                "tokens": sizes.steps * sizes.rows * sizes.sequence_len,
                "seconds": round(time.perf_counter() - t0, 1),
            }
    base = results["variants"]["baseline"]["val_bpb"]
    for v in results["variants"].values():
        v["ratio"] = v["val_bpb"] / base
    return results


def headline_lines(results: dict[str, Any]) -> list[str]:
    """One line per variant in the bench/ format; the combination (or the last variant) last."""
    variants = results["variants"]
    s = results["sizes"]
    tokens = s["steps"] * s["rows"] * s["sequence_len"]
    lines = [
        f"[quality] d{s['depth']}, {tokens:,} tokens per variant ({s['steps']} steps of "
        f"{s['rows']}x{s['sequence_len']}), vocab {s['vocab_size']}, on {results['device']}; "
        f"baseline {variants['baseline']['val_bpb']:.4f} bpb"
    ]
    others = [n for n in variants if n not in ("baseline", "all")]
    last = "all" if "all" in variants else (others.pop() if others else "baseline")
    for name in [*others, last]:
        v = variants[name]
        label = "quality_bpb" if name == last else f"quality_{name}"
        lines.append(f"{label}: {v['val_bpb']:.4f} bpb ({v['ratio']:.3f}x vs baseline; goal <=1.0x)")
    return lines


if __name__ == "__main__":
    main()
