"""The GPU check (issue 16): one command, at most 8 minutes, that tests and measures the CUDA path and
writes a JSON and a Markdown summary into the directory it is given.

    bash bench/gpu_check.sh OUT_DIR [flags]          # on the GPU machine (installs bench/.wheels first)
    python bench/gpu_check.py --out DIR              # where chatforge's dependencies are installed
    python bench/gpu_check.py --device cpu --quick --out DIR   # every phase at toy sizes (minutes)
    python bench/gpu_check.py --make-golden          # rewrite bench/gpu_golden.json (CPU, float32)

Phases, in this order, each in its own process with its own time budget. A phase that runs past
its budget, or past the whole check's, is killed and reported as cut, with whatever it had recorded;
the summary is written whatever happens, and the last line is the headline.

  env         the device and versions, and a bf16 matmul measured here: the second peak for MFU
  golden      a tiny float32 training run, on the real step and optimizers, against the CPU golden
  tests       pytest tests/gpu (the `gpu` marker) on this device, with a JUnit report
  throughput  the real training step (trainer.loop.train_step: bf16 autocast, compiled forward,
              Muon + AdamW, grad clip) at d12 and d20, 2048 tokens per row, the d-presets' 524,288
              tokens per optimizer step: tokens/s and MFU against the 989 TFLOP/s nanochat uses
              (trainer.telemetry.peak_flops) and against the matmul measured in `env`
  serving     our engine against transformers `generate` on left-padded batches, same shape (d12's)
              and dtype, at 32, 128 and 256 chat-like requests arriving together, plus one alone
              (unloaded TTFT); bench/serving.py's code
  real_run    a tokenizer trained here, then d12 on the bundled corpus through train_worker, as
              `chatforge train base --local` runs it (no Ray): the loss must fall
  quality     bench/quality.py at d12: the baseline, each architecture option (docs/model.md) and
              all of them, trained for the same tokens; validation bits per byte as ratios to the
              baseline (every variant must train, none may be more than 10% worse)

Files in --out: gpu_check.json, gpu_check.md, gpu_check.log (everything printed), gpu_tests.junit.xml.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROOTS = [REPO, REPO / "inference-svc"]  # the packages the check imports (pyproject's pythonpath)
sys.path[:0] = [str(p) for p in ROOTS if str(p) not in sys.path]
GOLDEN_FILE = REPO / "bench" / "gpu_golden.json"
CORPUS = REPO / "data" / "corpus"
# What chatforge needs that the GPU machine's image lacks travels as wheels (bench/gpu_wheels.sh);
# these are checked before any phase starts, so a missing one is one clear line, not six tracebacks.
REQUIRED = (
    "torch",
    "pydantic",
    "pydantic_settings",
    "prometheus_client",
    "tokenizers",
    "tiktoken",
    "pyarrow",
    "safetensors",
    "transformers",
    "pytest",
)
PHASE_NAMES = ("env", "golden", "tests", "throughput", "serving", "real_run", "quality")


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the GPU run and the quick CPU run."""

    budget_s: float  # the whole check
    phase_budget_s: dict[str, float]
    matmul_n: int
    matmul_dtype: str
    throughput_runs: tuple[tuple[str, int, bool], ...]  # (label, depth, compiled)
    throughput_vocab: int
    throughput_seq: int
    throughput_rows: int
    throughput_micro: int  # micro-batches per optimizer step
    throughput_steps: int  # timed, after one warm-up step
    serving_workload: dict[str, Any]  # bench/serving.py's Workload fields
    serving_concurrency: tuple[int, ...]
    serving_max_batched_tokens: int
    real_vocab: int
    real_depth: int
    real_seq: int
    real_rows: int
    real_steps: int
    real_log_every: int
    real_min_drop_nats: float  # below ln(vocab), the untrained model's loss, by the last logged step
    quality: dict[str, int]  # bench/quality.py's Sizes fields


GPU = Sizes(
    # 8 minutes is the machine's limit for one check; 30 s of it stay for starting and the summary.
    budget_s=450,
    # Upper bounds that add up to more than the whole: a phase that ends early leaves its time to the
    # later ones, and the whole check's deadline cuts the last. Torch.compile's first compile of each
    # graph (the tests compile FlexAttention for 2 dtypes x 2 head sizes, the throughput run d12 and
    # d20) is the unknown; a cut phase is rerun alone with --phases (bench/GPU_CHECK.md).
    phase_budget_s={
        "env": 40,
        "golden": 40,
        "tests": 150,
        "throughput": 150,
        "serving": 120,
        "real_run": 100,
        "quality": 120,
    },
    matmul_n=8192,
    matmul_dtype="bfloat16",
    throughput_runs=(("d12 eager", 12, False), ("d12", 12, True), ("d20", 20, True)),
    throughput_vocab=65_536,  # the d-presets' tokenizer
    throughput_seq=2048,
    throughput_rows=32,  # the d12/d20 presets' device_batch_rows
    throughput_micro=8,  # 8 x 32 x 2048 = 524,288 tokens per step, the presets' total_batch_tokens
    throughput_steps=3,
    serving_workload=dict(
        n_layer=12,
        n_embd=768,
        n_head=6,
        vocab_size=65_536,
        prompt_len=(32, 512),
        output_len=(32, 512),
        one_by_one_cap=0,
    ),
    serving_concurrency=(1, 32, 128, 256),
    # Tokens per step: vLLM's chunked-prefill default. More would also grow FlexAttention's block mask,
    # which is built dense over (step tokens x pool slots) at every step (paged_attention.py).
    serving_max_batched_tokens=2048,
    real_vocab=65_536,  # the d12 preset's; the same graph as the throughput run, so its compile is cached
    real_depth=12,
    real_seq=2048,
    real_rows=32,
    real_steps=150,
    real_log_every=10,
    # ln(65536) = 11.09 -> 7.09: under the 7.36 nats that token frequencies alone give (a unigram
    # model, measured on the bundled validation shard with this tokenizer), so reaching it takes
    # context. The run sees 10M tokens (about 2 passes over the corpus).
    real_min_drop_nats=4.0,
    # Five d12 runs of 2.6M tokens each, eager (five compiles would not fit): with an 8k vocabulary
    # the tokenizer trains in seconds. A first look at the options at depth; the numbers that decide
    # defaults need longer runs (`bench/quality.py --device cuda`, docs/model.md).
    quality=dict(
        depth=12,
        vocab_size=8192,
        sequence_len=1024,
        rows=32,
        steps=80,
        eval_batches=8,
        tokenizer_chars=5_000_000,
    ),
)
QUICK_CPU = Sizes(
    budget_s=420,
    phase_budget_s={
        "env": 60,
        "golden": 60,
        "tests": 150,
        "throughput": 90,
        "serving": 90,
        "real_run": 120,
        "quality": 90,
    },
    matmul_n=512,
    matmul_dtype="float32",
    throughput_runs=(("d2", 2, False), ("d3", 3, False)),
    throughput_vocab=512,
    throughput_seq=128,
    throughput_rows=4,
    throughput_micro=1,
    throughput_steps=2,
    serving_workload=dict(
        n_layer=2,
        n_embd=128,
        n_head=2,
        vocab_size=1024,
        prompt_len=(8, 64),
        output_len=(8, 48),
        one_by_one_cap=0,
    ),
    serving_concurrency=(1, 4, 8),
    serving_max_batched_tokens=256,
    real_vocab=512,
    real_depth=2,
    real_seq=128,
    real_rows=8,
    real_steps=40,
    real_log_every=5,
    # ln(512) = 6.24 -> 4.74, under the unigram model's 5.36 (measured as above); this run reached
    # 4.24 in 40 steps of 1,024 tokens on 2 CPU cores
    real_min_drop_nats=1.5,
    quality=dict(
        depth=2, vocab_size=512, sequence_len=128, rows=8, steps=20, eval_batches=2, tokenizer_chars=1_000_000
    ),
)


def sizes_for(device_type: str, quick: bool) -> Sizes:
    if device_type == "cuda" and not quick:
        return GPU
    if device_type == "cuda":  # quick on a GPU: the GPU shapes' kernels, fewer of them
        return dataclasses.replace(
            GPU,
            budget_s=240,
            throughput_runs=(("d12", 12, True),),
            throughput_micro=1,
            serving_concurrency=(1, 32),
            real_steps=50,
            real_min_drop_nats=2.0,  # 3M tokens: below ln(65536) = 11.09 by 2, not yet under the unigram's 7.36
            quality={**GPU.quality, "steps": 30},
        )
    return QUICK_CPU


# --- the golden: a tiny float32 run the CPU made, re-run here -------------------------------------


@dataclass(frozen=True)
class GoldenConfig:
    """Small enough for seconds on a CPU; its data is generated from a seed (no corpus, no
    tokenizer: only torch's arithmetic can differ between the machines)."""

    depth: int = 2
    vocab: int = 512
    seq: int = 64
    rows: int = 8
    steps: int = 20
    seed: int = 0  # torch.manual_seed before the model is built, on the CPU everywhere
    data_seed: int = 1234


# Step 1's loss is the untrained model's forward alone: float32 on two devices agrees to ~1e-6.
GOLDEN_FIRST_RTOL = 1e-4
# Later steps also carry Muon's Newton-Schulz iteration, which runs in bfloat16 on CUDA and float32
# on the CPU (trainer/optim.py); each update then differs by bf16 rounding and the runs drift apart.
# Measured on the CPU with that iteration forced to bf16 (`--make-golden` prints it, and the golden
# file keeps it): at most 1.3e-4 over these 20 steps. 1e-3 leaves 7 times that; TF32 matmuls or a
# bf16 autocast left on would move the losses by more, and a wrong mask or optimizer step by far more.
GOLDEN_RTOL = 1e-3


def golden_batches(g: GoldenConfig) -> list[tuple[Any, Any]]:
    """A Markov chain in which each token has 4 possible successors: the loss can fall from ln 512
    towards ln 4 in a few steps. Python's seeded `random`, so every machine draws the same tokens."""
    import torch

    rng = random.Random(g.data_seed)
    successors = [[rng.randrange(g.vocab) for _ in range(4)] for _ in range(g.vocab)]
    batches = []
    for _ in range(g.steps):
        rows = []
        for _ in range(g.rows):
            token = rng.randrange(g.vocab)
            row = [token]
            for _ in range(g.seq):
                token = rng.choice(successors[token])
                row.append(token)
            rows.append(row)
        ids = torch.tensor(rows)
        batches.append((ids[:, :-1].contiguous(), ids[:, 1:].contiguous()))
    return batches


def golden_run(g: GoldenConfig, device: Any) -> tuple[list[float], float]:
    """The losses of the golden run on `device`, in float32, and a checksum of the initial weights."""
    import torch

    from chatforge.contracts.training import TrainConfig
    from chatforge.model import GPT, GPTConfig
    from trainer.loop import Ranks, train_step
    from trainer.optim import apply_schedule, build_optimizers

    torch.manual_seed(g.seed)
    model = GPT(GPTConfig.from_depth(g.depth, g.vocab, sequence_len=g.seq))  # built on the CPU everywhere
    checksum = float(sum(p.detach().double().abs().sum() for p in model.parameters()))
    model.to(device)
    cfg = TrainConfig(
        stage="base",
        run="golden",
        artifacts_dir="unused",
        depth=g.depth,
        sequence_len=g.seq,
        device_batch_rows=g.rows,
        total_batch_tokens=g.rows * g.seq,
        num_steps=g.steps,
    )
    optimizers = build_optimizers(model, cfg.optim)
    ranks = Ranks(0, 1, device)
    losses = []
    for step, batch in enumerate(golden_batches(g)):
        apply_schedule(optimizers, step, g.steps, cfg.optim)
        loss, _ = train_step(model, optimizers, [batch], ranks, cfg, precision=torch.float32)
        losses.append(loss)
    return losses, checksum


def make_golden() -> int:
    """Write bench/gpu_golden.json from a CPU run, and print how far a bf16 Newton-Schulz moves it."""
    import torch

    from trainer import optim

    g = GoldenConfig()
    cpu = torch.device("cpu")
    losses, checksum = golden_run(g, cpu)
    plain = optim.orthogonalize
    optim.orthogonalize = functools.partial(plain, dtype=torch.bfloat16)  # Muon looks it up at each step
    try:
        bf16_ns, _ = golden_run(g, cpu)
    finally:
        optim.orthogonalize = plain
    drift = max(abs(a - b) / abs(a) for a, b in zip(losses, bf16_ns, strict=True))
    GOLDEN_FILE.write_text(
        json.dumps(
            {
                "note": "Made by `python bench/gpu_check.py --make-golden` on the CPU in float32; "
                "the GPU check re-runs this config in float32 and compares (bench/gpu_check.py).",
                "config": asdict(g),
                "torch": torch.__version__,
                "init_checksum": checksum,
                "losses": losses,
                "bf16_newton_schulz_max_rel_drift": drift,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"losses {losses[0]:.4f} -> {losses[-1]:.4f}; bf16 Newton-Schulz moves them by <= {drift:.1e}")
    print(f"wrote {GOLDEN_FILE.relative_to(REPO)}")
    return 0


# --- the parent: phases in child processes, deadlines, the summary ------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu_check"), help="directory for the summary")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="toy sizes (on the CPU: a few minutes)")
    parser.add_argument("--phases", default=",".join(PHASE_NAMES), help="comma-separated subset, in order")
    parser.add_argument(
        "--budget-s", type=float, default=0, help="the whole check's limit (default: by mode)"
    )
    parser.add_argument(
        "--phase-budget",
        action="append",
        default=[],
        metavar="PHASE=SECONDS",
        help="another limit for one phase (repeatable), e.g. real_run=300 for a rerun of that phase",
    )
    parser.add_argument("--commit", default="", help="the commit measured (default: git rev-parse HEAD)")
    parser.add_argument("--make-golden", action="store_true", help=make_golden.__doc__)
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase (a child)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_golden:
        return make_golden()
    if args.phase:
        return run_phase(args)
    return run_check(args)


def run_check(args: argparse.Namespace) -> int:
    started = time.time()
    out = Path(args.out).absolute()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "check": "gpu_check",
        "commit": args.commit or _git_commit(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "phases": {},
    }
    with open(out / "gpu_check.log", "w", encoding="utf-8") as log_file:
        console = _Console(log_file, started)
        phases = [p.strip() for p in args.phases.split(",") if p.strip()]
        budgets = _phase_budgets(args.phase_budget)
        unknown = [p for p in [*phases, *budgets] if p not in PHASE_NAMES]
        missing = _missing_modules()
        problem = (
            f"unknown phases {unknown}; choose from {', '.join(PHASE_NAMES)}"
            if unknown
            else f"missing Python packages {missing}: run bench/gpu_check.sh, which installs "
            "bench/.wheels (made by bench/gpu_wheels.sh)"
            if missing
            else None
        )
        if problem is None:
            import torch

            cuda = torch.cuda.is_available()
            device = args.device if args.device != "auto" else ("cuda" if cuda else "cpu")
            if device == "cuda" and not cuda:
                problem = "--device cuda but torch sees no CUDA device"
        if problem is not None:
            console.line(f"cannot start: {problem}")
            summary["error"] = problem
            return _finish(summary, out, console, started)
        sizes = sizes_for(device, args.quick)
        budget = args.budget_s or sizes.budget_s
        summary.update(device=device, budget_s=budget, sizes=asdict(sizes))
        console.line(
            f"gpu_check on {device}{' (quick)' if args.quick else ''}: phases {', '.join(phases)}; "
            f"{budget:.0f} s in all; commit {summary['commit']}"
        )
        deadline = started + budget
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
            for name in phases:
                summary["phases"][name] = _run_child(
                    name, args, device, Path(work), out, sizes, budgets, deadline, console
                )
                _write(summary, out)  # the summary so far, in case the whole check is killed
        return _finish(summary, out, console, started)


class _Console:
    """Progress lines on stdout and in gpu_check.log, each stamped with the seconds since the start."""

    def __init__(self, log_file: Any, started: float):
        self.log_file, self.started, self.lock = log_file, started, threading.Lock()

    def line(self, text: str, phase: str = "check") -> None:
        stamped = f"[{time.time() - self.started:6.1f}s {phase}] {text}"
        with self.lock:
            print(stamped, flush=True)
            self.log_file.write(stamped + "\n")
            self.log_file.flush()


def _run_child(
    name: str,
    args: argparse.Namespace,
    device: str,
    work: Path,
    out: Path,
    sizes: Sizes,
    budgets: dict[str, float],
    deadline: float,
    console: _Console,
) -> dict[str, Any]:
    """Run one phase in its own process group; kill the group at its time limit."""
    remaining = deadline - time.time() - 5  # 5 s to write the summary
    if remaining < 10:
        console.line("skipped: the check's time is spent", name)
        return {"status": "skipped", "reason": "the whole check's time budget was spent before it"}
    limit = min(budgets.get(name, sizes.phase_budget_s[name]), remaining)
    command = [sys.executable, __file__, "--phase", name, "--work", str(work), "--out", str(out)]
    command += ["--device", device] + (["--quick"] if args.quick else [])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, ROOTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    console.line(f"starting, at most {limit:.0f} s", name)
    t0 = time.time()
    # A new session: on a timeout the whole group goes (pytest, compile workers), by its id.
    child = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        errors="replace",
    )
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert child.stdout is not None
        for raw in child.stdout:
            tail.append(raw.rstrip("\n"))
            console.line(raw.rstrip("\n"), name)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    cut = False
    try:
        child.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        cut = True
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    reader.join(timeout=10)
    record = _read_json(work / f"{name}.json") or {}
    seconds = round(time.time() - t0, 1)
    if cut:
        record.update(status="cut", reason=f"ran past its {limit:.0f} s limit and was killed")
    elif child.returncode != 0 or record.get("status") not in ("passed", "failed"):
        # an exception the phase recorded keeps its own reason; a crash (killed for memory: -9) gets the status
        record.setdefault("reason", f"exit status {child.returncode}, no result recorded")
        record.update(status="error", output_tail=list(tail))
    record["seconds"] = seconds
    console.line(
        f"{record['status']} in {seconds:.0f} s" + (f": {record['reason']}" if "reason" in record else ""),
        name,
    )
    return record


def _finish(summary: dict[str, Any], out: Path, console: _Console, started: float) -> int:
    summary["wall_s"] = round(time.time() - started, 1)
    summary["headline"] = headline(summary)
    _write(summary, out)
    console.line(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    print(summary["headline"], flush=True)  # bare: the last line is the headline (bench/ convention)
    statuses = [p.get("status") for p in summary["phases"].values()]
    return 0 if statuses and all(s == "passed" for s in statuses) and "error" not in summary else 1


def headline(summary: dict[str, Any]) -> str:
    """The bench/ scripts' closing lines, `<name>: <value> <unit> (<ratio>x vs <reference>; goal <goal>)`:
    named lines for the phases and training MFU, then the serving ratio as the headline (last)."""
    phases = summary["phases"]
    passed = sum(p.get("status") == "passed" for p in phases.values())
    lines = [
        f"gpu_check_phases: {passed}/{len(phases)} phases passed on {summary.get('device', '?')} "
        f"({passed / max(len(phases), 1):.2f}x vs all phases; goal 1.00x)"
    ]
    if "error" in summary:
        lines[0] += f" {summary['error']}"
    runs = {r["label"]: r for r in phases.get("throughput", {}).get("runs", [])}
    big = runs.get("d20") or (list(runs.values())[-1] if runs else None)
    if big:
        lines.append(
            f"gpu_check_mfu: {100 * big['mfu_datasheet']:.1f} % MFU at {big['label']} "
            f"({big['mfu_datasheet']:.2f}x vs the {big['peak_datasheet_tflops']:.4g} TFLOP/s peak; goal >= 0.50x at d20)"
        )
    quality = phases.get("quality", {}).get("results")
    if quality:
        lines += [line for line in _quality_module().headline_lines(quality) if not line.startswith("[")]
        lines[-1] = lines[-1].replace("quality_bpb:", "gpu_check_quality:", 1)
    serving = [r for r in phases.get("serving", {}).get("runs", []) if r.get("vs_padded") is not None]
    if serving:
        mid = next((r for r in serving if r["n"] == 128), serving[-1])
        lines.append(
            f"gpu_check: {mid['tok_s']:,.0f} tok/s serving {mid['n']} requests "
            f"({mid['vs_padded']:.1f}x vs transformers padded batch; goal >= 3x at 128)"
        )
    return "\n".join(lines)


def _write(summary: dict[str, Any], out: Path) -> None:
    _atomic_write(out / "gpu_check.json", json.dumps(summary, indent=1, default=str) + "\n")
    _atomic_write(out / "gpu_check.md", markdown(summary))


# --- one phase, in the child ---------------------------------------------------------------------


class Record:
    """A phase's results, rewritten to <work>/<phase>.json at each update: a phase killed at its
    limit still reports what it had measured."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"status": "running", "checks": []}
        self.save()

    def set(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    def add(self, key: str, item: Any) -> None:
        self.data.setdefault(key, []).append(item)
        self.save()

    def check(self, name: str, ok: bool, detail: str) -> bool:
        """A pass/fail condition of the phase, with the numbers behind it; printed as it is decided."""
        self.data["checks"].append({"name": name, "ok": bool(ok), "detail": detail})
        self.save()
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return bool(ok)

    def save(self) -> None:
        _atomic_write(self.path, json.dumps(self.data, indent=1, default=str))


def run_phase(args: argparse.Namespace) -> int:
    import torch

    device = torch.device(args.device)
    if device.type == "cpu":
        from trainer.loop import cpu_threads

        torch.set_num_threads(cpu_threads(1))  # the trainer's rule: 1 thread on a busy machine
    sizes = sizes_for(device.type, args.quick)
    rec = Record(Path(args.work) / f"{args.phase}.json")
    phase: Callable[..., None] = PHASES[args.phase]
    try:
        phase(rec, sizes, device, Path(args.work), Path(args.out))
    except Exception as e:
        traceback.print_exc()
        rec.set(status="error", reason=f"{type(e).__name__}: {e}"[:2000])
        return 1
    checks = rec.data["checks"]
    rec.set(status="passed" if checks and all(c["ok"] for c in checks) else "failed")
    return 0


def phase_env(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    import torch

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "packages": _versions(REQUIRED + ("triton", "numpy")),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        info.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=round(total / 2**30, 1),
            free_gib=round(free / 2**30, 1),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    rec.set(**info)
    print(
        f"{info.get('gpu', 'cpu')}: torch {torch.__version__}, CUDA {torch.version.cuda}, python {info['python']}"
    )
    tflops = measure_matmul(device, s.matmul_n, getattr(torch, s.matmul_dtype))
    rec.set(matmul={"n": s.matmul_n, "dtype": s.matmul_dtype, "tflops": tflops})
    rec.check(
        "matmul measured", tflops > 0, f"{s.matmul_n}^3 {s.matmul_dtype}: {tflops:.4g} TFLOP/s (median of 10)"
    )


def measure_matmul(device: Any, n: int, dtype: Any) -> float:
    """The median rate of an n x n x n product on random data (zeros run faster: METHOD.md), two input
    sets alternating so that neither stays in cache; device events on CUDA."""
    import torch

    pairs = [
        (torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype))
        for _ in range(2)
    ]
    for a, b in pairs * 2:  # warm-up: cuBLAS picks its kernel, clocks come up
        a @ b
    times = []
    for i in range(10):
        a, b = pairs[i % 2]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def phase_golden(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    golden = json.loads(GOLDEN_FILE.read_text())
    g = GoldenConfig(**golden["config"])
    losses, checksum = golden_run(g, device)
    want = golden["losses"]
    rel = [abs(a - b) / abs(b) for a, b in zip(losses, want, strict=True)]
    rec.set(
        config=golden["config"], golden_torch=golden["torch"], losses=losses, golden_losses=want, rel_diff=rel
    )
    same_init = abs(checksum - golden["init_checksum"]) <= 1e-9 * abs(golden["init_checksum"])
    rec.check(
        "same initial weights as the golden",
        same_init,
        f"checksum {checksum:.6f} vs {golden['init_checksum']:.6f} (if not: torch's CPU generator changed, "
        "and the golden must be remade with this torch)",
    )
    rec.check(
        "first loss (the forward alone)",
        rel[0] <= GOLDEN_FIRST_RTOL,
        f"{losses[0]:.6f} vs {want[0]:.6f}: {rel[0]:.1e} relative (<= {GOLDEN_FIRST_RTOL:.0e})",
    )
    worst = max(range(len(rel)), key=rel.__getitem__)
    rec.check(
        f"all {len(want)} losses",
        max(rel) <= GOLDEN_RTOL,
        f"worst at step {worst + 1}: {losses[worst]:.5f} vs {want[worst]:.5f}, {rel[worst]:.1e} (<= {GOLDEN_RTOL:.0e})",
    )


def phase_tests(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    junit = out / "gpu_tests.junit.xml"
    junit.unlink(missing_ok=True)
    env = dict(os.environ, CHATFORGE_GPU_TESTS_DEVICE=device.type)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/gpu",
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "junit_family=xunit2",
        f"--junitxml={junit}",
    ]
    print(" ".join(command[1:]))
    code = subprocess.call(command, cwd=REPO, env=env)
    report = junit_summary(junit) if junit.is_file() else {}
    rec.set(pytest_exit=code, **report)
    if not report:
        rec.check("pytest wrote its report", False, f"no {junit.name}; pytest exited {code}")
        return
    bad = report["failures"] + report["errors"]
    rec.check(
        "gpu tests pass",
        report["tests"] > 0 and bad == 0 and code == 0,
        f"{report['tests']} tests: {report['passed']} passed, {bad} failed, {report['skipped']} skipped",
    )
    if device.type == "cuda":  # on the GPU every test has what it needs: a skip there hides something
        rec.check("nothing skipped on CUDA", report["skipped"] == 0, f"{report['skipped']} skipped")


def junit_summary(path: Path) -> dict[str, Any]:
    """Counts and the failing tests' messages from a JUnit XML report."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    problems, skipped = [], []
    for case in suite.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for kind in ("failure", "error"):
            for node in case.findall(kind):
                problems.append({"test": name, "kind": kind, "message": (node.get("message") or "")[:600]})
        for node in case.findall("skipped"):
            skipped.append({"test": name, "reason": (node.get("message") or "")[:200]})
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {
        **counts,
        "passed": passed,
        "time_s": float(suite.get("time", 0)),
        "problems": problems,
        "skipped_tests": skipped,
    }


def phase_throughput(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    import torch

    from chatforge.contracts.training import TrainConfig
    from chatforge.model import GPT, GPTConfig
    from trainer.loop import Ranks, train_step
    from trainer.optim import build_optimizers
    from trainer.telemetry import peak_flops

    measured = ((_read_json(work / "env.json") or {}).get("matmul") or {}).get("tflops")
    datasheet = peak_flops(device)
    rec.set(peak_datasheet_tflops=datasheet / 1e12, peak_measured_tflops=measured)
    tokens_per_step = s.throughput_rows * s.throughput_seq * s.throughput_micro
    for label, depth, compiled in s.throughput_runs:
        torch.manual_seed(0)
        with torch.device(device):  # built on the device: a d20's init on the host takes seconds
            model = GPT(GPTConfig.from_depth(depth, s.throughput_vocab, sequence_len=s.throughput_seq))
        cfg = TrainConfig(
            stage="base",
            run="throughput",
            artifacts_dir=str(work),
            depth=depth,
            sequence_len=s.throughput_seq,
            device_batch_rows=s.throughput_rows,
            total_batch_tokens=tokens_per_step,
        )
        optimizers = build_optimizers(model, cfg.optim)
        forward = torch.compile(model) if compiled else model  # as trainer.loop compiles it
        gen = torch.Generator().manual_seed(depth)
        shape = (s.throughput_rows, s.throughput_seq)
        # host tensors, as the data loader hands them over; the same ones every step
        batches = [
            (
                torch.randint(0, s.throughput_vocab, shape, generator=gen),
                torch.randint(0, s.throughput_vocab, shape, generator=gen),
            )
            for _ in range(s.throughput_micro)
        ]
        ranks = Ranks(0, 1, device)
        print(
            f"{label}: {model.num_params() / 1e6:.0f}M params, {tokens_per_step:,} tokens/step, warm-up step..."
        )
        t0 = time.perf_counter()
        train_step(model, optimizers, batches, ranks, cfg, forward=forward)
        _sync(device)
        warm_s = time.perf_counter() - t0
        times = []
        for _ in range(s.throughput_steps):
            t0 = time.perf_counter()
            train_step(model, optimizers, batches, ranks, cfg, forward=forward)
            _sync(device)
            times.append(time.perf_counter() - t0)
        step_s = sorted(times)[len(times) // 2]
        tok_s = tokens_per_step / step_s
        flops = model.flops_per_token() * tok_s
        run = {
            "label": label,
            "depth": depth,
            "compiled": compiled,
            "params": model.num_params(),
            "tokens_per_step": tokens_per_step,
            "warmup_step_s": round(warm_s, 2),
            "step_s": step_s,
            "step_times_s": times,
            "tokens_per_s": tok_s,
            "tflops": flops / 1e12,
            "mfu_datasheet": flops / datasheet,
            "peak_datasheet_tflops": datasheet / 1e12,
            "mfu_measured": flops / (measured * 1e12) if measured else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30
            if device.type == "cuda"
            else None,
        }
        rec.add("runs", run)
        measured_part = f", {run['mfu_measured']:.1%} of the measured {measured:.4g}" if measured else ""
        print(
            f"{label}: {tok_s:,.0f} tok/s, MFU {run['mfu_datasheet']:.1%} of {datasheet / 1e12:.4g} TFLOP/s"
            f"{measured_part} (warm-up step {warm_s:.1f} s, step {step_s:.2f} s)"
        )
        rec.check(f"{label} measured", math.isfinite(tok_s) and tok_s > 0, f"{tok_s:,.0f} tokens/s")
        del model, optimizers, forward, batches
        _release(device)
    rec.set(dynamo=_dynamo_counters())


def phase_serving(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    import torch
    from inference_svc.config import EngineConfig
    from serving import Workload, build_models, chat_like, pct, run_hf_padded, run_ours

    w = Workload(**s.serving_workload)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # what serving runs in
    ours, hf = build_models(w, device, dtype)
    biggest = chat_like(w, max(s.serving_concurrency))
    block = 16
    # A pool that holds the largest run whole, as a deployment sizes kv_cache_bytes for its load;
    # the default (half the free memory) is measured once at the end.
    blocks = sum(-(-(len(p) + o) // block) for p, o in zip(*biggest, strict=True)) + 64
    config = EngineConfig(
        num_blocks=blocks,
        block_size=block,
        max_num_seqs=max(s.serving_concurrency),
        max_num_batched_tokens=s.serving_max_batched_tokens,
    )
    rec.set(
        workload=s.serving_workload,
        dtype=str(dtype),
        engine=config.model_dump(),
        params_ours=ours.num_params(),
        params_transformers=hf.num_parameters(),
    )
    print(
        f"{w.n_layer} layers x {w.n_embd} wide, vocab {w.vocab_size}, {str(dtype).removeprefix('torch.')}: "
        f"pool of {blocks} blocks, {config.max_num_batched_tokens} tokens per step"
    )
    unloaded_ttft = None
    for n in s.serving_concurrency:
        prompts, outputs = chat_like(w, n)
        mine = run_ours(ours, prompts, outputs, config)
        row: dict[str, Any] = {
            "n": n,
            "tokens": mine.tokens,
            "seconds": mine.seconds,
            "tok_s": mine.tok_s,
            **{f"ttft_p{q}_ms": pct(mine.ttft_s, q) * 1e3 for q in (50, 90, 99)},
            **{f"itl_p{q}_ms": pct(mine.itl_s, q) * 1e3 for q in (50, 90, 99)},
            "kv_waste": mine.kv_waste,
            "padded_tok_s": None,
            "vs_padded": None,
        }
        if n == 1:
            unloaded_ttft = row["ttft_p50_ms"]
        else:  # one request alone has nothing to batch: the padded reference starts at 2
            padded = run_hf_padded(hf, prompts, outputs, device)
            row.update(
                padded_tok_s=padded.tok_s, padded_seconds=padded.seconds, vs_padded=mine.tok_s / padded.tok_s
            )
        if unloaded_ttft:
            row["ttft_p50_vs_unloaded"] = row["ttft_p50_ms"] / unloaded_ttft
        rec.add("runs", row)
        versus = (
            f" | padded batch {row['padded_tok_s']:,.0f} tok/s ({row['vs_padded']:.1f}x)"
            if row["vs_padded"]
            else ""
        )
        print(
            f"N={n}: ours {mine.tok_s:,.0f} tok/s{versus} | TTFT p50 {row['ttft_p50_ms']:.1f} ms "
            f"p99 {row['ttft_p99_ms']:.1f} ms | ITL p50 {row['itl_p50_ms']:.2f} ms p99 {row['itl_p99_ms']:.2f} ms"
        )
        rec.check(f"N={n} ran", mine.tokens == sum(outputs), f"{mine.tokens} tokens, as asked")
        _release(device)
    # Once more at N=32 (or the smallest loaded N) with EngineConfig() as it is: on CUDA a pool of half
    # the free memory (~1M slots for this shape), which FlexAttention's block mask spans at every step,
    # 512 tokens per step and 64 sequences at most.
    n = s.serving_concurrency[1] if len(s.serving_concurrency) > 1 else s.serving_concurrency[0]
    prompts, outputs = chat_like(w, n)
    default = EngineConfig()
    mine = run_ours(ours, prompts, outputs, default)
    rec.set(
        default_config={
            "n": n,
            "engine": default.model_dump(),
            "tok_s": mine.tok_s,
            "ttft_p50_ms": pct(mine.ttft_s, 50) * 1e3,
            "itl_p50_ms": pct(mine.itl_s, 50) * 1e3,
        }
    )
    print(f"N={n} with EngineConfig() defaults: {mine.tok_s:,.0f} tok/s")
    rec.check(f"N={n} with the default settings ran", mine.tokens == sum(outputs), f"{mine.tokens} tokens")
    rec.set(dynamo=_dynamo_counters())


def phase_real_run(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    from chatforge.artifacts import ArtifactStore
    from chatforge.contracts.events import read_log
    from chatforge.contracts.training import TokenizerConfig, TrainConfig
    from trainer.driver import run_stage
    from trainer.stages.tokenizer import train_tokenizer
    from trainer.telemetry import LOG_FILE

    if not (CORPUS / "val_00000.parquet").is_file():
        raise FileNotFoundError(f"no bundled corpus in {CORPUS}: `make data` here, and carry data/corpus")
    artifacts = work / "artifacts"
    t0 = time.perf_counter()
    train_tokenizer(
        TokenizerConfig(
            name="gpu-check", artifacts_dir=str(artifacts), corpus_dir=str(CORPUS), vocab_size=s.real_vocab
        ),
        redo=True,
    )
    rec.set(tokenizer_s=round(time.perf_counter() - t0, 1))
    cfg = TrainConfig(
        stage="base",
        run="gpu-check",
        artifacts_dir=str(artifacts),
        tokenizer="gpu-check",
        depth=s.real_depth,
        sequence_len=s.real_seq,
        device_batch_rows=s.real_rows,
        total_batch_tokens=s.real_rows * s.real_seq,
        num_steps=s.real_steps,
        corpus_dir=str(CORPUS),
        log_every_steps=s.real_log_every,
        eval_every_steps=0,
        eval_batches=2,
        sample_every_steps=0,
        checkpoint_every_steps=0,
        keep_checkpoints=1,
        use_gpu=device.type == "cuda",
        compile=True,
        resume=False,
    )
    rec.set(config={k: v for k, v in cfg.to_dict().items() if k not in ("optim", "artifacts_dir")})
    t0 = time.perf_counter()
    metrics = run_stage(cfg, launcher="local")
    rec.set(train_s=round(time.perf_counter() - t0, 1))
    progress = read_log(ArtifactStore(artifacts).stage_dir(cfg.run, cfg.stage) / LOG_FILE, "progress")
    curve = [{"step": e.step, "loss": e.loss, "tokens_per_s": e.tokens_per_s, "mfu": e.mfu} for e in progress]  # type: ignore[union-attr]
    rec.set(curve=curve, val_bpb=metrics.get("val_bpb"), final_loss=metrics.get("train_loss"))
    losses = [c["loss"] for c in curve]
    rec.check("losses finite", all(map(math.isfinite, losses)), f"{len(curve)} logged steps")
    # The untrained model predicts uniformly (its head starts near zero: chatforge.model), so its loss
    # is ln(vocab); the run must get `real_min_drop_nats` below that by its last logged step.
    untrained = math.log(s.real_vocab)
    rec.check(
        "loss falls below the untrained model's",
        losses[-1] <= untrained - s.real_min_drop_nats,
        f"ln({s.real_vocab}) = {untrained:.2f} -> {losses[-1]:.3f} at step {curve[-1]['step']} "
        f"(must reach <= {untrained - s.real_min_drop_nats:.2f})",
    )
    quarter = max(1, len(losses) // 4)
    early, late = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    rec.check(
        "loss falls during the run",
        late < early,
        f"mean of the first {quarter} logged losses {early:.3f}, of the last {quarter} {late:.3f}",
    )
    steady = curve[len(curve) // 2 :]  # past the compile and the first data units
    rec.set(
        steady_tokens_per_s=sum(c["tokens_per_s"] for c in steady) / len(steady),
        steady_mfu=sum(c["mfu"] for c in steady) / len(steady),
    )


def phase_quality(rec: Record, s: Sizes, device: Any, work: Path, out: Path) -> None:
    if not (CORPUS / "val_00000.parquet").is_file():
        raise FileNotFoundError(f"no bundled corpus in {CORPUS}: `make data` here, and carry data/corpus")
    quality = _quality_module()
    sizes = quality.Sizes(**s.quality)
    results = quality.run_quality(
        sizes, list(quality.VARIANTS), device=device.type, corpus_dir=str(CORPUS), work=work / "quality"
    )
    rec.set(results=results)
    variants = results["variants"]
    rec.check(
        "every variant trained",
        set(variants) == set(quality.VARIANTS)
        and all(math.isfinite(v["val_bpb"]) for v in variants.values()),
        ", ".join(f"{n} {v['val_bpb']:.4f} bpb" for n, v in variants.items()),
    )
    worst = max(variants.values(), key=lambda v: v["ratio"])
    rec.check(
        "no option more than 10% worse than the baseline",
        worst["ratio"] <= 1.10,
        ", ".join(f"{n} {v['ratio']:.3f}x" for n, v in variants.items() if n != "baseline"),
    )


PHASES: dict[str, Callable[..., None]] = {
    "env": phase_env,
    "golden": phase_golden,
    "tests": phase_tests,
    "throughput": phase_throughput,
    "serving": phase_serving,
    "real_run": phase_real_run,
    "quality": phase_quality,
}


# --- the Markdown summary ------------------------------------------------------------------------


def markdown(summary: dict[str, Any]) -> str:
    phases = summary["phases"]
    env = phases.get("env", {})
    lines = [
        "# GPU check",
        "",
        f"- commit `{summary.get('commit')}`, started {summary.get('started')}, {summary.get('wall_s', '?')} s "
        f"of {summary.get('budget_s', '?')} s{' (quick)' if summary.get('quick') else ''}",
        f"- device: {env.get('gpu') or summary.get('device')}"
        + (f", {env.get('memory_gib')} GiB, capability {env.get('capability')}" if env.get("gpu") else "")
        + (f"; torch {env.get('torch')}, CUDA {env.get('cuda')}, python {env.get('python')}" if env else ""),
        f"- **{summary.get('headline', '')}**",
    ]
    if "error" in summary:
        lines += ["", f"Could not start: {summary['error']}"]
    lines += ["", "| phase | status | seconds | checks |", "| --- | --- | --- | --- |"]
    for name, p in phases.items():
        checks = "; ".join(f"{'ok' if c['ok'] else '**FAIL**'} {c['name']}" for c in p.get("checks", []))
        reason = f" ({p['reason']})" if p.get("reason") else ""
        lines.append(f"| {name} | {p.get('status')}{reason} | {p.get('seconds', '')} | {checks} |")
    if env.get("matmul"):
        m = env["matmul"]
        lines += [
            "",
            f"Matmul peak measured here: {m['tflops']:.4g} TFLOP/s ({m['n']}^3, {m['dtype']}, random data).",
        ]
    if phases.get("golden", {}).get("rel_diff"):
        g = phases["golden"]
        lines += [
            "",
            "## Golden (float32, against the CPU)",
            "",
            f"Worst relative loss difference {max(g['rel_diff']):.2e}; first {g['rel_diff'][0]:.1e}; "
            f"losses {g['losses'][0]:.4f} -> {g['losses'][-1]:.4f} (golden {g['golden_losses'][-1]:.4f}).",
        ]
    t = phases.get("tests", {})
    if "tests" in t:
        lines += [
            "",
            "## GPU tests",
            "",
            f"{t['tests']} tests: {t['passed']} passed, {t['failures']} failed, "
            f"{t['errors']} errors, {t['skipped']} skipped, {t['time_s']:.0f} s.",
        ]
        lines += [f"- {p['kind']}: `{p['test']}`: {p['message'][:300]}" for p in t.get("problems", [])]
        lines += [f"- skipped: `{p['test']}`: {p['reason']}" for p in t.get("skipped_tests", [])]
    tp = phases.get("throughput", {})
    if tp.get("runs"):
        lines += [
            "",
            "## Training throughput (train_step: bf16 autocast, Muon + AdamW)",
            "",
            "| run | params | tokens/step | tokens/s | TFLOP/s | MFU vs datasheet | MFU vs measured | warm-up step s | peak GiB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in tp["runs"]:
            mm = f"{r['mfu_measured']:.1%}" if r.get("mfu_measured") else "-"
            mem = f"{r['peak_memory_gib']:.1f}" if r.get("peak_memory_gib") else "-"
            lines.append(
                f"| {r['label']} | {r['params'] / 1e6:.0f}M | {r['tokens_per_step']:,} | {r['tokens_per_s']:,.0f} | "
                f"{r['tflops']:.4g} | {r['mfu_datasheet']:.1%} of {r['peak_datasheet_tflops']:.4g} | {mm} | "
                f"{r['warmup_step_s']} | {mem} |"
            )
    sv = phases.get("serving", {})
    if sv.get("runs"):
        lines += [
            "",
            "## Serving (chat-like, all requests at once; ours vs transformers padded batch)",
            "",
            "| N | ours tok/s | padded tok/s | ratio | TTFT p50/p90/p99 ms | vs unloaded | ITL p50/p90/p99 ms | KV waste |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sv["runs"]:
            padded = f"{r['padded_tok_s']:,.0f}" if r.get("padded_tok_s") else "-"
            ratio = f"{r['vs_padded']:.1f}x" if r.get("vs_padded") else "-"
            vs = f"{r['ttft_p50_vs_unloaded']:.1f}x" if r.get("ttft_p50_vs_unloaded") else "-"
            lines.append(
                f"| {r['n']} | {r['tok_s']:,.0f} | {padded} | {ratio} | {r['ttft_p50_ms']:.1f} / "
                f"{r['ttft_p90_ms']:.1f} / {r['ttft_p99_ms']:.1f} | {vs} | {r['itl_p50_ms']:.2f} / "
                f"{r['itl_p90_ms']:.2f} / {r['itl_p99_ms']:.2f} | {r['kv_waste']:.1%} |"
            )
        if sv.get("default_config"):
            d = sv["default_config"]
            lines.append(
                f"\nWith EngineConfig() defaults at N={d['n']}: {d['tok_s']:,.0f} tok/s, "
                f"TTFT p50 {d['ttft_p50_ms']:.1f} ms, ITL p50 {d['itl_p50_ms']:.2f} ms."
            )
    rr = phases.get("real_run", {})
    if rr.get("curve"):
        c = rr["curve"]
        lines += [
            "",
            "## Real run (bundled corpus, train_worker in-process)",
            "",
            f"Loss {c[0]['loss']:.3f} at step {c[0]['step']} -> {c[-1]['loss']:.3f} at step {c[-1]['step']}; "
            f"val bpb {rr.get('val_bpb')}; steady {rr.get('steady_tokens_per_s', 0):,.0f} tokens/s, "
            f"MFU {rr.get('steady_mfu', 0):.1%}; tokenizer {rr.get('tokenizer_s')} s, training {rr.get('train_s')} s.",
        ]
    q = phases.get("quality", {}).get("results")
    if q:
        qs = q["sizes"]
        lines += [
            "",
            "## Quality (bench/quality.py: the architecture options, equal tokens)",
            "",
            f"d{qs['depth']}, {qs['steps']} steps of {qs['rows']}x{qs['sequence_len']} tokens, vocab "
            f"{qs['vocab_size']}, eager.",
            "",
            "| variant | options | val bpb | vs baseline | seconds |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, v in q["variants"].items():
            lines.append(
                f"| {name} | {v['options'] or '-'} | {v['val_bpb']:.4f} | {v['ratio']:.3f}x | {v['seconds']} |"
            )
    return "\n".join(lines) + "\n"


# --- helpers -------------------------------------------------------------------------------------


def _quality_module() -> Any:
    """bench/quality.py (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_quality", module)
    spec.loader.exec_module(module)
    return module


def _phase_budgets(items: list[str]) -> dict[str, float]:
    """--phase-budget PHASE=SECONDS values; a malformed one is named in the error."""
    budgets = {}
    for item in items:
        name, _, seconds = item.partition("=")
        try:
            budgets[name.strip()] = float(seconds)
        except ValueError:
            raise SystemExit(f"--phase-budget {item!r}: expected PHASE=SECONDS, e.g. real_run=300") from None
    return budgets


def _missing_modules() -> list[str]:
    import importlib.util

    return [m for m in REQUIRED if importlib.util.find_spec(m) is None]


def _versions(modules: tuple[str, ...]) -> dict[str, str | None]:
    from importlib import metadata

    names = {"pydantic_settings": "pydantic-settings", "prometheus_client": "prometheus-client"}
    out: dict[str, str | None] = {}
    for m in modules:
        try:
            out[m] = metadata.version(names.get(m, m))
        except metadata.PackageNotFoundError:
            out[m] = None
    return out


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git here: pass --commit)"
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release(device: Any) -> None:
    """Free what the last run left, so the next one is measured (and sized) alone."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _dynamo_counters() -> dict[str, Any]:
    """torch.compile's own counts (graphs compiled, graph breaks, recompiles): a recompile storm or a
    graph break shows here before it shows in a profile."""
    from torch._dynamo.utils import counters

    return {key: dict(counters[key]) for key in ("stats", "graph_break", "recompiles") if key in counters}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
