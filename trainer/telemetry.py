"""What a training run tells the world: progress lines, a JSONL log, Prometheus metrics, Redis events.

Only rank 0 reports. Every report goes to four places, each for a different reader:
- a line on stdout (a tqdm bar instead when stderr is a terminal): for the person watching;
- `<stage dir>/log.jsonl`, one JSON object per event: for the report card and the tests, and it
  survives restarts (a resumed run appends, so the whole loss curve is in one file);
- metrics named `chatforge_train_*`, for dashboards. In a Ray Train worker every rank records
  its own through Ray's metrics (`ray.util.metrics`, tagged `stage`, `run` and `worker`, the
  rank): Ray's metrics agent on each node exports them on the node's metrics port (8080 on
  KubeRay's pods) as `ray_chatforge_train_*`, on by default, so every worker of a job is scraped;
  throughput and tokens are each worker's share, so sums over workers are the job's. With
  `--metrics-port` rank 0 also serves its own as a Prometheus endpoint (how a `--local` run, which
  has no Ray, shows them), on `CHATFORGE_TRAIN_METRICS_HOST` (default 127.0.0.1, like every process
  on one machine);
- the Redis stream `chatforge:job:<job id>:events` when the run has a job id: for the jobs API and
  the UI, which follow a run live.

The events are the typed, versioned models of `chatforge.contracts.events`, written through one
path (`emit`) and read back through the same models (`read_log`, `follow_log`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from chatforge.contracts import events
from chatforge.contracts.events import (
    EVENTS_MAXLEN,
    ProgressEvent,
    RawEvent,
    Sample,
    SamplesEvent,
    TrainerEvent,
    ValidationEvent,
    job_events_stream,
    parse_log_line,
    stream_entry,
)

log = logging.getLogger(__name__)

# MFU needs the device's peak. A GPU's comes from its data sheet (dense bfloat16, no sparsity),
# keyed by a part of the name torch reports; the first key found in the name wins, so the longer
# names come first ("H100 NVL" before "H100"). A GPU not listed is measured like a CPU.
GPU_PEAK_FLOPS = {
    "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "H800": 989e12,
    "GH200": 989e12, "B200": 2250e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12,
    "L4": 121e12, "A10": 125e12,
}  # fmt: skip
# A CPU has no one published number (cores, vector units, clocks and load all differ), so it is
# measured at the start of every run: the best of a few float32 matmuls of this size, with the
# threads the run trains with. The run records the number (checkpoint meta `hardware`), and the
# report card shows it: MFU on a CPU is against what this machine did, not a guess.
PROBE_N = 1024
PROBE_SECONDS = 0.3
PEAK_ENV = "CHATFORGE_PEAK_FLOPS"  # FLOP/s of one device; overrides the table and the probe
# Progress bars for long work besides training steps (tokenizer, corpus, evals): "1" always, "0"
# never; unset, a bar is drawn when stderr is a terminal (logs and CI stay line-based).
PROGRESS_ENV = "CHATFORGE_PROGRESS"
# The stage log's name and reader belong to the events' contract (the gateway reads stage logs too).
LOG_FILE = events.LOG_FILE
read_log = events.read_log


class Peak(NamedTuple):
    """One device's peak FLOP/s, where it came from, and the device it is for."""

    flops: float
    source: str  # "data sheet", "matmul probe", "--peak-flops", "$CHATFORGE_PEAK_FLOPS"
    kind: str  # the device type a cost rate is set for: "H100", "A100", ..., or "cpu"
    name: str  # the device's full name


def device_peak(device: Any, override: float = 0.0) -> Peak:
    """The peak FLOP/s of one device of the kind this rank trains on (see the constants above)."""
    import torch

    name, kind = describe_device(device)
    env = os.environ.get(PEAK_ENV, "")
    if override > 0:
        return Peak(override, "--peak-flops", kind, name)
    if env:
        try:
            value = float(env)
        except ValueError:
            value = 0.0
        if value > 0:
            return Peak(value, f"${PEAK_ENV}", kind, name)
        log.warning("ignoring %s=%r: not a positive number of FLOP/s", PEAK_ENV, env)
    if kind in GPU_PEAK_FLOPS:
        return Peak(GPU_PEAK_FLOPS[kind], "data sheet", kind, name)
    if getattr(device, "type", "cpu") == "cuda":
        log.warning("GPU %r is not in the table of known peaks: measuring a bfloat16 matmul instead", name)
        return Peak(measure_matmul_flops(device, torch.bfloat16), "matmul probe", kind, name)
    return Peak(measure_matmul_flops(device, torch.float32), "matmul probe", kind, name)


def describe_device(device: Any) -> tuple[str, str]:
    """(full name, kind) of a torch device: the kind is a GPU_PEAK_FLOPS key, the name, or "cpu"."""
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        name = torch.cuda.get_device_name(device)
        return name, next((key for key in GPU_PEAK_FLOPS if key in name), name)
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' * (threads != 1)})", "cpu"


def peak_flops(device: Any, override: float = 0.0) -> float:
    """Peak FLOP/s of the device this rank trains on (`device_peak`'s number)."""
    return device_peak(device, override).flops


def measure_matmul_flops(
    device: Any, dtype: Any, *, n: int = PROBE_N, seconds: float = PROBE_SECONDS
) -> float:
    """The best FLOP/s of n x n matmuls run for about `seconds` (at least three)."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if getattr(device, "type", "cpu") == "cuda" else (lambda: None)
    a @ b  # warm-up: first-call costs (allocation, kernel choice) are not the device's speed
    sync()
    best, start, reps = float("inf"), time.perf_counter(), 0
    while reps < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2 * n**3 / best


def progress_bar(
    iterable: Any = None, *, desc: str, total: float | None = None, unit: str = "it", unit_scale: bool = False
) -> Any:
    """A tqdm bar on stderr (count, rate and ETA) for long work, on or off as PROGRESS_ENV says."""
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale, disable=not bars_on(),
                dynamic_ncols=True, file=sys.stderr)  # fmt: skip


def bars_on() -> bool:
    """Whether progress bars are drawn: PROGRESS_ENV says, else whether stderr is a terminal."""
    setting = os.environ.get(PROGRESS_ENV, "")
    return setting == "1" or (setting != "0" and sys.stderr.isatty())


class Telemetry:
    """Rank 0's reporter; on other ranks every method does nothing."""

    def __init__(
        self,
        *,
        stage: str,
        run: str,
        log_path: Path,
        total_steps: int,
        enabled: bool,
        job_id: str = "",
        metrics_port: int = 0,
        console: bool = True,
    ):
        self.stage, self.run, self.total_steps, self.enabled = stage, run, total_steps, enabled
        self.log_path = log_path
        self.job_id = job_id
        self.console = console
        self._redis: Any = None
        self._bar: Any = None
        self._metrics: dict[str, Any] = {}
        self._ray = _RayWorkerMetrics.here(stage, run)  # every rank of a Ray Train run
        if not enabled:
            return
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if job_id:
            from chatforge.redisconn import connect

            self._redis = connect()
        self._setup_metrics(metrics_port)
        if console and total_steps and bars_on():
            self._bar = progress_bar(desc=f"{run}/{stage}", total=total_steps, unit="step")

    # --- events ------------------------------------------------------------------------------
    def emit(self, event: TrainerEvent) -> None:
        """Record one event, stamped with this stage, run and the time, in log.jsonl and the Redis
        stream; its `line` (the human form) is printed here on the console or, for a Ray job, by
        the driver that follows the log (`follow_log`)."""
        if not self.enabled:
            return
        event = event.model_copy(update={"stage": self.stage, "run": self.run, "time": time.time()})
        if event.line:
            self._print(event.line)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(event.model_dump_json() + "\n")
        if self._redis is not None:
            self._redis.xadd(
                job_events_stream(self.job_id), stream_entry(event), maxlen=EVENTS_MAXLEN, approximate=True
            )

    def _print(self, line: str) -> None:
        if not self.console:
            return
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def progress(
        self, *, step: int, loss: float, lr: float, tokens_per_s: float, mfu: float, eta_s: float,
        tokens_total: int, print_line: bool,
    ) -> None:  # fmt: skip
        """One step's numbers (`tokens_total`: trained by this process), recorded as metrics; with
        `print_line` also as a progress event and a line."""
        if self._ray is not None:
            self._ray.progress(step=step, loss=loss, lr=lr, tokens_per_s=tokens_per_s, mfu=mfu,
                               tokens_total=tokens_total)  # fmt: skip
        if not self.enabled:
            return
        m = self._metrics
        if m:
            m["step"].labels(self.stage).set(step)
            m["loss"].labels(self.stage).set(loss)
            m["lr"].labels(self.stage).set(lr)
            m["tps"].labels(self.stage).set(tokens_per_s)
            m["mfu"].labels(self.stage).set(mfu)
            m["tokens"].labels(self.stage).inc(tokens_total - m["_tokens_seen"].get(self.stage, 0))
            m["_tokens_seen"][self.stage] = tokens_total
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2g}", tok_s=f"{tokens_per_s:.0f}")
        if print_line:
            line = (
                f"[{self.run}/{self.stage}] step {step:5d}/{self.total_steps} | loss {loss:.4f} | "
                f"lr {lr:.3g} | {tokens_per_s:,.0f} tok/s | MFU {100 * mfu:.1f}% | ETA {_duration(eta_s)}"
            )
            self.emit(
                ProgressEvent(
                    line=line, step=step, loss=loss, lr=lr, tokens_per_s=tokens_per_s, mfu=mfu, eta_s=eta_s
                )
            )

    def validation(self, *, step: int, bpb: float) -> None:
        if self._ray is not None:
            self._ray.set("bpb", bpb)
        if not self.enabled:
            return
        if self._metrics:
            self._metrics["bpb"].labels(self.stage).set(bpb)
        line = f"[{self.run}/{self.stage}] step {step:5d} | val bits-per-byte {bpb:.4f}"
        self.emit(ValidationEvent(line=line, step=step, val_bpb=bpb))

    def samples(self, *, step: int, samples: list[tuple[str, str]]) -> None:
        if not self.enabled:
            return
        lines = "\n".join(f"[{self.run}/{self.stage}] sample: {p!r} -> {c!r}" for p, c in samples)
        self.emit(
            SamplesEvent(line=lines, step=step, samples=[Sample(prompt=p, completion=c) for p, c in samples])
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- Prometheus ----------------------------------------------------------------------------
    def _setup_metrics(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        labels = ["stage"]  # bounded: base, mid, sft
        r = self.registry
        self._metrics = {
            "step": Gauge("chatforge_train_step", "Last completed optimizer step", labels, registry=r),
            "loss": Gauge(
                "chatforge_train_loss", "Training loss (nats per target token)", labels, registry=r
            ),
            "lr": Gauge(
                "chatforge_train_learning_rate", "Learning-rate multiplier x Muon base LR", labels, registry=r
            ),
            "tps": Gauge(
                "chatforge_train_tokens_per_second", "Training throughput, all ranks", labels, registry=r
            ),
            "mfu": Gauge("chatforge_train_mfu_ratio", "Model FLOPs utilisation (0-1)", labels, registry=r),
            "bpb": Gauge("chatforge_train_val_bits_per_byte", "Validation bits per byte", labels, registry=r),
            "tokens": Counter("chatforge_train_tokens_total", "Tokens trained on", labels, registry=r),
            "_tokens_seen": {},
        }
        if port:
            host = os.environ.get("CHATFORGE_TRAIN_METRICS_HOST", "127.0.0.1")
            start_http_server(port, addr=host, registry=self.registry)


REPUBLISH_S = 2.0  # how often a worker's gauges are given to Ray again


class _RayWorkerMetrics:
    """One Ray Train worker's metrics through Ray's metrics agent (see the module doc)."""

    def __init__(self, stage: str, run: str, rank: int, world: int):
        from ray.util import metrics

        keys = ("stage", "run", "worker")
        self.tags = {"stage": stage, "run": run, "worker": str(rank)}
        self.world = max(world, 1)
        gauge = metrics.Gauge
        self.gauges = {
            "step": gauge("chatforge_train_step", "Last completed optimizer step", keys),
            "loss": gauge("chatforge_train_loss", "Training loss (nats per target token)", keys),
            "lr": gauge("chatforge_train_learning_rate", "Learning-rate multiplier x Muon base LR", keys),
            "tps": gauge(
                "chatforge_train_tokens_per_second", "Training throughput, this worker's share", keys
            ),
            "mfu": gauge("chatforge_train_mfu_ratio", "Model FLOPs utilisation (0-1)", keys),
            "bpb": gauge("chatforge_train_val_bits_per_byte", "Validation bits per byte", keys),
        }
        self.tokens = metrics.Counter(
            "chatforge_train_tokens", "Tokens trained on, this worker's share", keys
        )
        self._tokens_seen = 0.0
        self._last: dict[str, float] = {}
        # Ray exports a gauge only while it is being set; steps can be minutes apart.
        threading.Thread(target=self._republish, name="train-metrics-republish", daemon=True).start()

    def set(self, name: str, value: float) -> None:
        self._last[name] = value
        self.gauges[name].set(value, tags=self.tags)

    def _republish(self) -> None:
        while True:
            time.sleep(REPUBLISH_S)
            for name, value in list(self._last.items()):
                self.gauges[name].set(value, tags=self.tags)

    @classmethod
    def here(cls, stage: str, run: str) -> _RayWorkerMetrics | None:
        """This process's recorder when it is a Ray Train worker; None elsewhere (Ray is imported
        by then in a worker, so a run without Ray never imports it here)."""
        if "ray" not in sys.modules:
            return None
        try:
            import ray
            from ray import train

            if not ray.is_initialized():
                return None
            context = train.get_context()
            rank, world = context.get_world_rank(), context.get_world_size()
        except Exception:  # not inside a Ray Train worker
            return None
        return cls(stage, run, int(rank), int(world))

    def progress(
        self, *, step: int, loss: float, lr: float, tokens_per_s: float, mfu: float, tokens_total: int
    ) -> None:
        for name, value in (("step", step), ("loss", loss), ("lr", lr), ("tps", tokens_per_s / self.world),
                            ("mfu", mfu)):  # fmt: skip
            self.set(name, value)
        share = tokens_total / self.world
        if share > self._tokens_seen:
            self.tokens.inc(share - self._tokens_seen, tags=self.tags)
            self._tokens_seen = share


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def follow_log(path: Path, stop: Any, *, poll_s: float = 0.5, out: Any = None) -> None:
    """Print the `line` of every event appended to `path` until `stop` (a threading.Event) is set;
    how the driver of a Ray job shows the progress its workers record."""
    out = out or sys.stdout
    offset = path.stat().st_size if path.is_file() else 0
    while True:
        done = stop.is_set()  # read before the file, so the last lines are printed
        if path.is_file():
            with open(path, encoding="utf-8") as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode("utf-8"))
            for raw in complete.splitlines():
                event = parse_log_line(raw)
                line = event.data.get("line") if isinstance(event, RawEvent) else getattr(event, "line", "")
                if line:
                    print(line, file=out, flush=True)
        if done:
            return
        stop.wait(poll_s)
