"""The sandbox service's client: a `ToolExecutor` over HTTP.

Used by the inference engine's tool loop and by the HumanEval evaluation. It never raises for what
the snippet or the service's load does: a full service answers `busy`, an unreachable or broken
one `unavailable`. Only a caller bug (limits beyond the service's maxima) raises `ValueError`.
Needs only httpx (no torch, no fastapi); `import chatforge` does not import this module.
"""

from __future__ import annotations

from typing import Any

import httpx

from chatforge.tools import ToolLimits, ToolResult

DEFAULT_URL = "http://127.0.0.1:8092"
# The service enforces the run's own timeout; the HTTP call allows that plus queueing and start-up.
_QUEUE_AND_OVERHEAD_S = 15.0
_SERVICE_MAX_TIMEOUT_S = 60.0  # the service's default max_timeout_s


class SandboxClient:
    def __init__(self, base_url: str = DEFAULT_URL, *, connect_timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(30.0, connect=connect_timeout_s)
        )

    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult:
        body: dict[str, Any] = {"code": code}
        # Without limits the service applies its own default, which is at most its maximum.
        read_timeout_s = _QUEUE_AND_OVERHEAD_S + (limits.timeout_s if limits else _SERVICE_MAX_TIMEOUT_S)
        if limits is not None:
            body.update(
                timeout_s=limits.timeout_s, memory_mb=limits.memory_mb, output_bytes=limits.output_bytes
            )
        try:
            resp = self._http.post("/v1/run", json=body, timeout=httpx.Timeout(read_timeout_s, connect=2.0))
        except httpx.HTTPError as e:
            return ToolResult("unavailable", message=f"sandbox at {self.base_url} unreachable: {e!r}")
        if resp.status_code in (200, 429, 503):
            try:
                return ToolResult.from_dict(resp.json())
            except (ValueError, TypeError, KeyError):
                pass  # not our service's answer; reported below
        if 400 <= resp.status_code < 500 and resp.status_code != 429:
            raise ValueError(f"sandbox rejected the request ({resp.status_code}): {_detail(resp)}")
        return ToolResult("unavailable", message=f"sandbox answered {resp.status_code}: {_detail(resp)}")

    def info(self) -> dict[str, Any]:
        """The service's /info: isolation mode and layers, limits, concurrency."""
        resp = self._http.get("/info")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _detail(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("detail", resp.text))[:500]
    except ValueError:
        return resp.text[:500]
