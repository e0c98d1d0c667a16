"""Running a stage: as a Ray Train job with N workers, or in this process.

Ray Train owns distribution and retries: it starts `workers` processes (one GPU each with NCCL on a
cluster, CPU processes with gloo here), initialises torch.distributed between them, and, when one
dies, restarts the whole group up to `max_failures` times. The restarted workers get the last
checkpoint they reported and continue from it. What Ray stores is a pointer file: the weights live
once, in the artifact store.

`run_on_ray` is the one launcher: base, mid and SFT (`trainer.loop.train_worker`) and RL
(`trainer.rl.rl_worker`) hand it their worker, which has one signature for that contract:
`worker(config_dict, *, restart_from, report, console) -> metrics`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from chatforge import checkpoint as ckpt
from chatforge.artifacts import ArtifactStore
from chatforge.contracts.training import ConfigError, TrainConfig

from .loop import Report, cpu_threads, train_worker
from .telemetry import LOG_FILE, PEAK_ENV, follow_log

POINTER_FILE = "pointer.txt"
LAUNCHERS = ("ray", "local")


class Worker(Protocol):
    """A stage's life on one rank (`trainer.loop.train_worker` documents the arguments); returns
    the final metrics."""

    def __call__(
        self, config_dict: dict[str, Any], *, restart_from: Path | None, report: Report | None, console: bool
    ) -> dict[str, Any]: ...


def run_stage(cfg: TrainConfig, *, launcher: str = "ray") -> dict[str, Any]:
    """Train one stage to the end; returns its final metrics. Ray must be running for "ray"."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {LAUNCHERS}, got {launcher!r}")
    stage_dir = ArtifactStore(Path(cfg.artifacts_dir)).stage_dir(cfg.run, cfg.stage)
    if not cfg.resume:
        clear_stage(stage_dir)
    if cfg.job_id:
        from chatforge.redisconn import connect

        connect()  # start the embedded Redis here (when there is no REDIS_URL) and export its URL
    if launcher == "local":
        if cfg.workers != 1:
            raise ConfigError(
                f"a local run has one worker: drop --local to run --workers {cfg.workers} on Ray"
            )
        return train_worker(cfg.to_dict())
    return run_on_ray(
        train_worker, cfg.to_dict(), name=f"{cfg.run}-{cfg.stage}", stage_dir=stage_dir, workers=cfg.workers,
        use_gpu=cfg.use_gpu, max_failures=cfg.max_failures,
    )  # fmt: skip


def clear_stage(stage_dir: Path) -> None:
    """Remove a stage's checkpoints and log, for a run that starts over."""
    for path in ckpt.list_checkpoints(stage_dir):
        shutil.rmtree(path)
    (stage_dir / LOG_FILE).unlink(missing_ok=True)


def stage_done(cfg: TrainConfig) -> bool:
    """Whether the stage's latest checkpoint is its final step."""
    latest = ckpt.latest(ArtifactStore(Path(cfg.artifacts_dir)).stage_dir(cfg.run, cfg.stage))
    if latest is None:
        return False
    meta = ckpt.read_meta(latest)
    return int(meta["step"]) >= int(meta.get("num_steps", 1 << 62))


@contextmanager
def ray_session(run_dir: Path, *, address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """A local Ray on loopback for the block, its temp dir under `run_dir` when the path is short
    enough for Ray's socket names (else under /tmp); reuses a Ray that is already running, and
    joins the cluster at `address` or $RAY_ADDRESS instead of starting one."""
    from chatforge.raylocal import local_ray, loopback_env

    for key, value in loopback_env().items():  # before `import ray`, which reads them (raylocal)
        os.environ.setdefault(key, value)
    # Ray starts workers at nice 15 to keep its own daemons responsive; training *is* the work here,
    # and at nice 15 it gets almost no CPU on a machine that is busy with anything else.
    os.environ.setdefault("RAY_worker_niceness", "0")
    import ray

    if ray.is_initialized():
        yield
        return
    # A stage started by Ray's job supervisor (the gateway's jobs API) runs on that job's cluster,
    # which the supervisor names in RAY_ADDRESS: join it (a new local Ray would be refused there:
    # Ray does not take num_cpus for a cluster it joins).
    address = address or os.environ.get("RAY_ADDRESS") or None

    candidate = Path(run_dir).absolute() / "ray-tmp"
    temp = candidate if len(str(candidate)) <= 48 else Path(tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp"))
    # The dashboard (on 127.0.0.1) serves Ray's state API, which Ray Train's placement-group
    # cleaner polls: without it the cleaner can mistake the live controller for a dead one and
    # remove the workers' placement group mid-run (seen on a loaded 2-core machine).
    with local_ray(temp, address=address, num_cpus=num_cpus or os.cpu_count(), include_dashboard=True,
                   dashboard_host="127.0.0.1"):  # fmt: skip
        yield


def run_on_ray(
    worker: Worker,
    config: dict[str, Any],
    *,
    name: str,
    stage_dir: Path,
    workers: int,
    use_gpu: bool,
    max_failures: int,
) -> dict[str, Any]:
    """Run `worker(config, ...)` on `workers` Ray Train workers until it finishes; a worker group
    that loses a worker restarts from the last reported checkpoint, up to `max_failures` times.
    Returns the metrics of the stage's latest checkpoint. Ray must be running."""
    from ray.train import BackendConfig, FailureConfig, RunConfig, ScalingConfig

    env = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": str(cpu_threads(workers))}
    for key in ("REDIS_URL", PEAK_ENV):
        if os.environ.get(key):
            env[key] = os.environ[key]
    storage = stage_dir.parent / "ray"
    worker_config = {"worker": worker, "config": config, "env": env, "rendezvous_dir": str(storage)}
    scaling = ScalingConfig(
        num_workers=workers,
        use_gpu=use_gpu,
        resources_per_worker=None if use_gpu else {"CPU": 1},
    )
    run_config = RunConfig(
        # a fresh name per job: Ray restores within one job (worker restarts); resuming a job that
        # died is the artifact store's business (`resume`)
        name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}",
        storage_path=str(storage),
        failure_config=FailureConfig(max_failures=max_failures),
    )
    if use_gpu:
        # NCCL across nodes: Ray Train's torch backend sets up the process group (TCP rendezvous)
        from ray.train.torch import TorchConfig, TorchTrainer

        trainer: Any = TorchTrainer(
            _ray_worker, train_loop_config=worker_config, torch_config=TorchConfig(backend="nccl"),
            scaling_config=scaling, run_config=run_config,
        )  # fmt: skip
    else:
        # gloo on one machine: the workers meet through a file, not a TCP store (which would listen
        # on every interface), and gloo's own sockets stay on `lo`
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        worker_config["rendezvous"] = "file"
        trainer = DataParallelTrainer(
            _ray_worker, train_loop_config=worker_config, backend_config=BackendConfig(),
            scaling_config=scaling, run_config=run_config,
        )  # fmt: skip
    stop = threading.Event()
    follower = threading.Thread(target=follow_log, args=(stage_dir / LOG_FILE, stop), daemon=True)
    follower.start()
    try:
        result = trainer.fit()
    finally:
        stop.set()
        follower.join(timeout=5)
    if result.error is not None:
        raise result.error
    latest = ckpt.latest(stage_dir)
    return ckpt.read_meta(latest)["metrics"] if latest else {}


def _ray_worker(config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: join the process group, find the checkpoint to restart
    from, run the stage's worker, which reports each checkpoint."""
    import ray.train

    os.environ.update(config["env"])
    context = ray.train.get_context()
    joined = config.get("rendezvous") == "file" and context.get_world_size() > 1
    if joined:
        join_process_group_by_file(
            Path(config["rendezvous_dir"]), context.get_world_rank(), context.get_world_size()
        )

    restart_from = None
    reported = ray.train.get_checkpoint()
    if reported is not None:
        with reported.as_directory() as d:
            restart_from = Path((Path(d) / POINTER_FILE).read_text(encoding="utf-8").strip())

    def report(metrics: dict[str, float], path: Path | None) -> None:
        checkpoint = None
        if path is not None:
            pointer_dir = Path(tempfile.mkdtemp(prefix="chatforge-pointer-"))
            (pointer_dir / POINTER_FILE).write_text(str(path), encoding="utf-8")
            checkpoint = ray.train.Checkpoint.from_directory(str(pointer_dir))
        ray.train.report(metrics, checkpoint=checkpoint)

    worker: Worker = config["worker"]
    try:
        worker(config["config"], restart_from=restart_from, report=report, console=False)
    finally:
        if joined:
            import torch.distributed as dist

            dist.destroy_process_group()


def join_process_group_by_file(directory: Path, rank: int, world_size: int) -> None:
    """gloo process group through a FileStore; a fresh file per worker-group attempt, named by rank 0."""
    import uuid

    import torch.distributed as dist
    from ray.train.collective import broadcast_from_rank_zero

    directory.mkdir(parents=True, exist_ok=True)
    path = broadcast_from_rank_zero(str(directory / f".rendezvous-{uuid.uuid4().hex}") if rank == 0 else "")
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world_size)
