"""The in-process sandbox executor: the `ToolExecutor` that actually runs snippets.

The HTTP service wraps it; the inference engine's tool loop can also use it directly when the
sandbox runs beside the engine. Each run: admission (slot or "busy"), the slot's caps for the run
as a whole (cgroups.py), launch under the host's isolation (see isolation.py), capped collection
(process.py), then whatever is left in the slot's cgroup killed, and one outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess

from chatforge.tools import Outcome, ToolLimits, ToolResult

from .admission import Busy, Reservation, SlotPool
from .cgroups import RunCaps, RunCgroups, RunUsage
from .isolation import LAUNCHER_ERROR_PREFIXES, Isolation, detect_isolation, prepare
from .process import RawRun, run_capped
from .settings import MIB, Settings, load_settings
from .uids import UidLease

log = logging.getLogger(__name__)


class SandboxExecutor:
    """Runs untrusted Python snippets, one fresh isolated process each; never raises for bad code."""

    def __init__(self, settings: Settings | None = None, isolation: Isolation | None = None) -> None:
        self.settings = s = settings or load_settings()
        self._uids: UidLease | None = None
        self.cgroups: RunCgroups | None = None
        if os.geteuid() == 0:
            self._uids = UidLease(s.uid_base, s.uid_span, s.max_concurrent)
        try:
            iso = isolation or detect_isolation(s, self._uids.uids[0] if self._uids else None)
            self.cgroups = RunCgroups.create(s.max_concurrent, s.cpu_quota_cores, enabled=s.cgroups == "auto")
            self.isolation = dataclasses.replace(iso, run_caps=self.cgroups.layers)
        except BaseException:
            self.close()
            raise
        self.pool = SlotPool(s.max_concurrent, s.max_queue)

    def close(self) -> None:
        """Give the run uids and cgroups back to the host (runs must have finished)."""
        if self.cgroups is not None:
            self.cgroups.close()
        if self._uids is not None:
            self._uids.close()

    def __enter__(self) -> SandboxExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def run_uids(self) -> list[int]:
        """The host uids this executor's slots run as (empty when the service is not root)."""
        return list(self._uids.uids) if self._uids else []

    def run(self, code: str, limits: ToolLimits | None = None) -> ToolResult:
        limits = self.check_limits(limits)
        try:
            reservation = self.pool.reserve()
        except Busy as e:
            return ToolResult("busy", message=str(e))
        return self.run_reserved(reservation, code, limits)

    def reserve(self) -> Reservation:
        """Admit one run now (raises `Busy` when full); the caller passes it to `run_reserved`."""
        return self.pool.reserve()

    def run_reserved(self, reservation: Reservation, code: str, limits: ToolLimits) -> ToolResult:
        """Wait for a slot (up to queue_timeout_s), then run; always consumes the reservation."""
        size = len(code.encode("utf-8", errors="surrogatepass"))
        if size > self.settings.max_code_bytes:
            reservation.cancel()
            return ToolResult(
                "error", message=f"code is {size} bytes; the limit is {self.settings.max_code_bytes}"
            )
        try:
            with reservation.slot(self.settings.queue_timeout_s) as slot:
                uid = self._uids.uids[slot] if self._uids else None
                assert self.cgroups is not None
                placement = self.cgroups.placement(slot)
                placement.begin(self.run_caps(limits))
                try:
                    launch = prepare(self.isolation, self.settings, code, limits, uid, placement)
                    try:
                        raw = run_capped(launch, limits.timeout_s, limits.output_bytes)
                    finally:
                        launch.release()
                finally:
                    usage = placement.end()  # kills what is left in the slot's cgroup
        except Busy as e:
            return ToolResult("busy", message=str(e))
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:
            log.exception("sandbox launch failed")
            return ToolResult("unavailable", message=f"sandbox could not start the run: {e}")
        return classify(raw, limits, usage)

    def run_caps(self, limits: ToolLimits) -> RunCaps:
        """The caps of one run as a whole: CPU quota, memory (its tmpfs pages count), processes."""
        s = self.settings
        memory = limits.memory_mb * MIB + 2 * s.tmpfs_bytes  # /tmp and /dev/shm
        return RunCaps(s.cpu_quota_cores, memory, s.max_processes)

    def check_limits(self, limits: ToolLimits | None) -> ToolLimits:
        """The limits to use, defaults filled in; ValueError naming the field when out of range."""
        limits = limits or self.settings.default_limits()
        s = self.settings
        if not 0 < limits.timeout_s <= s.max_timeout_s:
            raise ValueError(f"timeout_s={limits.timeout_s} must be in (0, {s.max_timeout_s}]")
        if not 64 <= limits.memory_mb <= s.max_memory_mb:
            raise ValueError(f"memory_mb={limits.memory_mb} must be in [64, {s.max_memory_mb}]")
        if not 1 <= limits.output_bytes <= s.max_output_bytes:
            raise ValueError(f"output_bytes={limits.output_bytes} must be in [1, {s.max_output_bytes}]")
        return limits


def classify(raw: RawRun, limits: ToolLimits, usage: RunUsage | None = None) -> ToolResult:
    """One outcome for a finished run; limits hit by the sandbox win over the exit status."""
    usage = usage or RunUsage()
    forks = (
        f"; {usage.forks_refused} fork(s) refused at the run's process limit" if usage.forks_refused else ""
    )
    stderr = raw.stderr.decode("utf-8", errors="replace")
    code = raw.exit_code
    if code and raw.stderr.startswith(LAUNCHER_ERROR_PREFIXES):
        # The sandbox failed to set the run up (a snippet printing this only spoils its own result).
        return _result("unavailable", raw, f"sandbox could not start the run: {stderr.strip()[:500]}")
    if raw.output_capped:
        return _result("output_limit", raw, f"output passed {limits.output_bytes} bytes; the run was stopped")
    if raw.timed_out:
        return _result("timeout", raw, f"killed after {limits.timeout_s:g} s wall clock{forks}")
    # RLIMIT_CPU sends SIGXCPU: bubblewrap reports it as 128 + n, a direct child as -n.
    if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        return _result("timeout", raw, f"CPU time limit ({limits.timeout_s:g} s) exceeded{forks}")
    if usage.oom_kills:  # the run's processes together passed its memory cap: the kernel killed some
        return _result(
            "memory", raw,
            f"the run's processes together passed its memory limit ({limits.memory_mb} MB plus its "
            f"tmpfs); the kernel killed {usage.oom_kills} of them{forks}",
        )  # fmt: skip
    if code != 0 and "MemoryError" in "\n".join(stderr.strip().splitlines()[-3:]):
        return _result("memory", raw, f"memory limit ({limits.memory_mb} MB) exceeded")
    if code == 0:
        return _result("ok", raw, forks.removeprefix("; "))
    return _result("error", raw, f"exit status {code}{forks}")


def _result(outcome: Outcome, raw: RawRun, message: str = "") -> ToolResult:
    return ToolResult(
        outcome,
        stdout=raw.stdout.decode("utf-8", errors="replace"),
        stderr=raw.stderr.decode("utf-8", errors="replace"),
        exit_code=raw.exit_code,
        duration_s=raw.duration_s,
        truncated=raw.output_capped,
        message=message,
    )
