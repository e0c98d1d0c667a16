"""Start and stop a local Ray instance that lives on loopback only.

On one machine every process binds to 127.0.0.1 (docs/conventions.md). Ray, left alone, advertises the
machine's external interface and listens on all of them. Two settings together keep it on loopback:
`_node_ip_address="127.0.0.1"`, and `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, without which Ray
resolves "127.0.0.1" back to the external address (`services.resolve_ip_for_localhost`). The
variable is read when `ray` is first imported, so it is set here before that import and inherited
by every worker Ray starts. Ray's temp dir (sockets, logs, spill) stays inside the run's directory.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
