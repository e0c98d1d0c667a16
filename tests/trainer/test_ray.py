"""Ray Train jobs: 1 worker and 2 workers agree, and a killed worker is replaced without a reset.

Ray on 2 shared cores is slow to start, so one local Ray serves the module and the runs are tiny
(a d1 model, 6 steps of 4 micro-batches of 2 x 64 tokens).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from chatforge.artifacts import ArtifactStore
from tests.trainer.conftest import tiny_config
from trainer.driver import run_stage
from trainer.telemetry import read_log

STEPS = 6


@pytest.fixture(scope="module")
def ray_cluster():
    from trainer.driver import ray_session

    temp = tempfile.mkdtemp(prefix="cf-ray-", dir="/tmp")
    try:
        with ray_session(Path(temp), num_cpus=2):
            yield
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _store(tmp_path: Path, artifacts: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(artifacts, root)
    return root


def _losses(root: Path) -> dict[int, list[float]]:
    """Every logged loss by step (a step run twice, before and after a restart, has two)."""
    out: dict[int, list[float]] = {}
    for e in read_log(ArtifactStore(root).stage_dir("r", "base") / "log.jsonl", "progress"):
        out.setdefault(e.step, []).append(e.loss)
    return out


class ListenerWatch:
    """Records every listening socket that a process of this test's tree opens off loopback."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.found: set[tuple[str, str, int]] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self.stop.wait(0.3):
            for proc in psutil.Process().children(recursive=True):
                try:
                    conns = proc.net_connections(kind="inet")
                    name = proc.name()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                for c in conns:
                    if c.status == psutil.CONN_LISTEN and not _loopback(c.laddr.ip):
                        self.found.add((name, c.laddr.ip, c.laddr.port))


def _loopback(ip: str) -> bool:
    return ip.removeprefix("::ffff:").startswith("127.") or ip == "::1"


@pytest.fixture(scope="module")
def two_worker_run(ray_cluster, artifacts, corpus_dir, tmp_path_factory):
    root = _store(tmp_path_factory.mktemp("two"), artifacts)
    cfg = tiny_config("base", root, corpus_dir, num_steps=STEPS, workers=2, checkpoint_every_steps=2)
    watch = ListenerWatch()
    watch.thread.start()
    try:
        run_stage(cfg, launcher="ray")
    finally:
        watch.stop.set()
        watch.thread.join()
    return _losses(root), watch.found


@pytest.fixture(scope="module")
def two_worker_losses(two_worker_run):
    return two_worker_run[0]


def test_ray_training_listens_on_loopback_only(two_worker_run):
    assert two_worker_run[1] == set()


def test_one_and_two_workers_give_the_same_losses(two_worker_losses, artifacts, corpus_dir, tmp_path):
    root = _store(tmp_path, artifacts)
    run_stage(
        tiny_config("base", root, corpus_dir, num_steps=STEPS, checkpoint_every_steps=2), launcher="local"
    )
    one = _losses(root)
    assert sorted(one) == sorted(two_worker_losses) == list(range(1, STEPS + 1))
    for step in one:
        assert two_worker_losses[step][0] == pytest.approx(one[step][0], rel=1e-4), step
    assert one[STEPS][0] < one[1][0]  # it trained


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_the_run_continues(
    two_worker_losses, artifacts, corpus_dir, tmp_path
):
    root = _store(tmp_path, artifacts)
    marker = tmp_path / "killed"
    cfg = tiny_config(
        "base", root, corpus_dir, num_steps=STEPS, workers=2, checkpoint_every_steps=2,
        fail_at_step=3, fail_marker=str(marker), max_failures=1,
    )  # fmt: skip
    run_stage(cfg, launcher="ray")
    assert marker.read_text().startswith("rank 1 exited at step 3")
    starts = read_log(ArtifactStore(root).stage_dir("r", "base") / "log.jsonl", "start")
    assert [(s.step, s.resumed) for s in starts] == [(0, False), (2, True)]
    losses = _losses(root)
    # steps 1-3 ran, rank 1 died before step 4, the group restarted from the step-2 checkpoint:
    # step 3 ran twice with the same loss, and the curve continues with no reset
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert len(losses[3]) == 2 and losses[3][1] == pytest.approx(losses[3][0], rel=1e-5)
    for step in losses:
        assert losses[step][-1] == pytest.approx(two_worker_losses[step][0], rel=1e-4), step
