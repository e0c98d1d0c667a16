"""Start and stop a local Ray instance that lives on loopback only.

On one machine every process binds to 127.0.0.1 (docs/conventions.md). Ray, left alone, advertises the
machine's external interface and listens on all of them. Two settings together keep it on loopback:
`_node_ip_address="127.0.0.1"`, and `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, without which Ray
resolves "127.0.0.1" back to the external address (`services.resolve_ip_for_localhost`). The
variable is read when `ray` is first imported, so it is set here before that import and inherited
by every worker Ray starts. Ray's temp dir (sockets, logs, spill) stays inside the run's directory.

`start_head` runs a Ray head as a child process instead (`ray start --head --block`), for a process
that only talks to Ray over its REST APIs (the gateway's local job backend): the head lives in its
own session under a parent-death signal (`chatforge.lifetime`), so it goes when its owner goes,
SIGKILL included; `ray start --block` stops every Ray process it started on that signal, the
raylet's agents included, which a Ray inside a killed driver leaves running.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatforge.lifetime import kill_session, spawn_owned

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Usage stats would try to reach the internet; the dashboard is not needed for jobs here.
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
}


def loopback_env() -> dict[str, str]:
    """Environment a process needs so that a Ray it starts stays on 127.0.0.1."""
    return dict(LOOPBACK_ENV)


def _apply_env() -> None:
    for key, value in LOOPBACK_ENV.items():
        os.environ.setdefault(key, value)


def init_local_ray(
    temp_dir: str | os.PathLike[str],
    *,
    num_cpus: int | None = None,
    address: str | None = None,
    **kwargs: Any,
) -> Any:
    """`ray.init` on loopback with its temp dir under `temp_dir`; connects instead when `address` is given.

    Unix socket paths are limited to 107 bytes, so a deep `temp_dir` fails early with a clear message.
    """
    _apply_env()
    import ray

    if address:
        return ray.init(address=address, **kwargs)
    temp = Path(temp_dir).absolute()
    if len(str(temp)) > 60:
        raise ValueError(
            f"Ray temp dir {temp} is too long for Ray's socket paths (keep it under 60 characters)"
        )
    temp.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    return ray.init(_node_ip_address="127.0.0.1", _temp_dir=str(temp), num_cpus=num_cpus, **kwargs)


@contextmanager
def local_ray(temp_dir: str | os.PathLike[str], **kwargs: Any) -> Iterator[Any]:
    """A local Ray for the duration of a block; always shut down afterwards."""
    context = init_local_ray(temp_dir, **kwargs)
    try:
        yield context
    finally:
        shutdown_ray()


@dataclass
class RayHead:
    """A Ray head started by `start_head`: its `ray start` process (a session leader) and addresses."""

    process: subprocess.Popen[bytes]
    dashboard_url: str
    gcs_address: str
    temp_dir: Path

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the head (it stops its processes), then end whatever is left in its session."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        kill_session(self.process.pid, grace_s=5.0)


def start_head(
    temp_dir: str | os.PathLike[str],
    *,
    num_cpus: int | None = None,
    dashboard_port: int = 0,
    metrics_export_port: int = 0,
    timeout_s: float = 180.0,
) -> RayHead:
    """A Ray head with its dashboard on loopback, as a child that dies with this process.

    Every port Ray would otherwise fix (GCS 6379, the dashboard agent's 52365, the Ray client's
    10001) is a free one, so it coexists with another Ray on the machine (the dashboard's is
    `dashboard_port` when given). Returns once the
    dashboard answers HTTP (with Ray's token authentication on, a 401 to a call without the token).
    """
    import httpx

    temp = Path(temp_dir).absolute()
    if len(str(temp)) > 60:
        raise ValueError(
            f"Ray temp dir {temp} is too long for Ray's socket paths (keep it under 60 characters)"
        )
    temp.mkdir(parents=True, exist_ok=True)
    gcs, dashboard, agent, client = (free_port() for _ in range(4))
    dashboard = dashboard_port or dashboard  # a fixed one when asked (`chatforge up` prints it)
    ray_cli = Path(sys.executable).with_name("ray")
    argv = [
        str(ray_cli) if ray_cli.exists() else "ray", "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--temp-dir={temp}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}",
        f"--num-cpus={num_cpus or os.cpu_count() or 1}", "--disable-usage-stats",
    ]  # fmt: skip
    if metrics_export_port:  # where Ray's metrics agent serves the node's metrics (else Ray picks)
        argv.append(f"--metrics-export-port={metrics_export_port}")
    log = open(temp / "head.log", "ab")
    try:
        # No drain on SIGTERM: it waits up to 30 s for Serve replicas a job head does not have.
        env = {**os.environ, **LOOPBACK_ENV, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        process = spawn_owned(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    head = RayHead(process, f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{gcs}", temp)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        while True:
            if process.poll() is not None:
                head.stop()
                raise RuntimeError(
                    f"ray start exited with status {process.returncode}; see {temp / 'head.log'}"
                )
            try:
                http.get(f"{head.dashboard_url}/api/version")
                return head
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                head.stop()
                raise RuntimeError(
                    f"the Ray head's dashboard did not answer in {timeout_s:.0f} s; see {temp / 'head.log'}"
                )
            time.sleep(0.25)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shutdown_ray() -> None:
    """`ray.shutdown`, without the race that kills the process.

    A Ray object (object ref, actor handle) finalised by the cyclic garbage collector while the core
    worker shuts down calls into it from whatever thread ran the collection, and Ray then exits the
    whole process with status 1 ("The core worker has already been shutdown"; seen once in six
    test-suite runs, the pytest process gone mid-test). So garbage is collected while Ray is still
    up, and the collector is paused for the shutdown itself.
    """
    import ray

    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ray.shutdown()
    finally:
        if was_enabled:
            gc.enable()
