"""Prometheus metrics of the sandbox service.

Each app owns its registry (not the process-global one), so tests can run several services in one
process. Labels are bounded: `outcome` is one of the seven `chatforge.tools.Outcome` values, `mode` is
"namespaces" or "weak".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chatforge.tools import ToolResult

from .admission import SlotPool

# A run is ~20 ms of interpreter start-up at best and its timeout (default 5 s, max 60 s) at worst.
DURATION_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SandboxMetrics:
    def __init__(self, pool: SlotPool, mode: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.executions = Counter(
            "chatforge_sandbox_executions",  # exposed as ..._executions_total
            "Snippet runs by how they ended (busy: refused before starting)",
            ["outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "chatforge_sandbox_execution_duration_seconds",
            "Wall-clock time of a run from process start to its last byte of output, by outcome",
            ["outcome"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        running = Gauge("chatforge_sandbox_running", "Runs executing now", registry=self.registry)
        running.set_function(lambda: pool.running)
        waiting = Gauge(
            "chatforge_sandbox_waiting", "Runs admitted and waiting for a slot", registry=self.registry
        )
        waiting.set_function(lambda: pool.waiting)
        # 1 for the mode this service runs in, so an alert can fire on mode="weak".
        isolation = Gauge(
            "chatforge_sandbox_isolation_mode", "Isolation mode in use", ["mode"], registry=self.registry
        )
        isolation.labels(mode=mode).set(1)

    def observe(self, result: ToolResult) -> None:
        self.executions.labels(outcome=result.outcome).inc()
        if result.outcome not in ("busy", "unavailable"):
            self.duration.labels(outcome=result.outcome).observe(result.duration_s)
