"""Prometheus metrics of the engine, named after vLLM's set with the chatforge_ prefix.

The registry is injectable: tests use a fresh one each, and the engine itself never touches HTTP.
Latencies are histograms in seconds; counters end in _total.

In a Ray Serve replica (`ray_serve=True`) every instrument is also recorded through Ray's own
metrics (`ray.serve.metrics`, which tag each value with its `application`, `deployment` and
`replica`): Ray's metrics agent on every node exports them on the node's metrics port (8080 on
KubeRay's pods) as `ray_chatforge_*`, so Prometheus scrapes every replica, and dashboards sum
across replicas (docs/architecture.md). The replica's own `GET /metrics` (through Serve's proxy,
one replica per request) stays for a look by hand.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Buckets from 1 ms to 1 min: a tiny CPU model answers in milliseconds, a large one under load in seconds.
_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class _Mirrored:
    """A prometheus_client instrument that also records into a Ray metric (same name, same labels
    as tags). Everything else (`_value`, `collect`) is the prometheus_client instrument's."""

    def __init__(
        self, local: Any, remote: Any, labelnames: tuple[str, ...] = (), tags: dict[str, str] | None = None
    ):
        self._local, self._remote, self._labelnames, self._tags = local, remote, labelnames, tags

    def labels(self, *values: str) -> _Mirrored:
        tags = dict(zip(self._labelnames, (str(v) for v in values), strict=True))
        return _Mirrored(self._local.labels(*values), self._remote, tags=tags)

    def inc(self, amount: float = 1.0) -> None:
        self._local.inc(amount)
        self._remote.inc(amount, tags=self._tags)

    def set(self, value: float) -> None:
        self._local.set(value)
        self._remote.set(value, tags=self._tags)

    def observe(self, value: float) -> None:
        self._local.observe(value)
        self._remote.observe(value, tags=self._tags)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._local, name)

    def republish(self) -> None:
        """A gauge's current value again: Ray exports a gauge only while it is being set."""
        self._remote.set(self._local._value.get(), tags=self._tags)


def _mirror(instrument: Any, kind: str) -> Any:
    """`instrument` recorded through Ray Serve's metrics too (Ray's Counter takes the name without
    the _total that prometheus_client adds; its export adds it back)."""
    from ray.serve import metrics as serve_metrics

    name, doc = instrument._name, instrument._documentation
    labels = tuple(instrument._labelnames)
    tag_keys = labels or None
    remote: Any
    if kind == "counter":
        remote = serve_metrics.Counter(name, description=doc, tag_keys=tag_keys)
    elif kind == "gauge":
        remote = serve_metrics.Gauge(name, description=doc, tag_keys=tag_keys)
    else:
        remote = serve_metrics.Histogram(
            name, description=doc, boundaries=list(_LATENCY_BUCKETS_S), tag_keys=tag_keys
        )
    return _Mirrored(instrument, remote, labels)


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None, *, ray_serve: bool = False):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests_running = Gauge(
            "chatforge_inference_requests_running", "Requests in the running batch", registry=r
        )
        self.requests_waiting = Gauge(
            "chatforge_inference_requests_waiting", "Requests waiting to be scheduled", registry=r
        )
        self.kv_cache_usage = Gauge(
            "chatforge_kv_cache_usage_ratio", "Fraction of KV-cache blocks in use (0-1)", registry=r
        )
        self.prefix_queries = Counter(
            "chatforge_prefix_cache_queries", "Prompt tokens looked up in the prefix cache", registry=r
        )
        self.prefix_hits = Counter(
            "chatforge_prefix_cache_hits", "Prompt tokens found in the prefix cache", registry=r
        )
        self.preemptions = Counter("chatforge_inference_preemptions", "Sequences preempted", registry=r)
        self.prompt_tokens = Counter(
            "chatforge_inference_prompt_tokens", "Prompt tokens received", registry=r
        )
        self.generation_tokens = Counter(
            "chatforge_inference_generation_tokens", "Tokens generated (sampled)", registry=r
        )
        self.requests_finished = Counter(
            "chatforge_inference_requests_finished", "Finished requests", ["finish_reason"], registry=r
        )
        self.time_to_first_token = Histogram(
            "chatforge_inference_time_to_first_token_seconds",
            "From arrival to the first generated token",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "chatforge_inference_inter_token_latency_seconds",
            "Between consecutive generated tokens of a request",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.e2e_latency = Histogram(
            "chatforge_inference_e2e_request_latency_seconds",
            "From arrival to the end of a request",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        if ray_serve:
            for attr, kind in (
                ("requests_running", "gauge"), ("requests_waiting", "gauge"), ("kv_cache_usage", "gauge"),
                ("prefix_queries", "counter"), ("prefix_hits", "counter"), ("preemptions", "counter"),
                ("prompt_tokens", "counter"), ("generation_tokens", "counter"),
                ("requests_finished", "counter"), ("time_to_first_token", "histogram"),
                ("inter_token_latency", "histogram"), ("e2e_latency", "histogram"),
            ):  # fmt: skip
                setattr(self, attr, _mirror(getattr(self, attr), kind))
            self._gauges = [self.requests_running, self.requests_waiting, self.kv_cache_usage]
            _start_republishing(self)

    def republish(self) -> None:
        """Every gauge's current value to Ray again (an idle engine sets none)."""
        for gauge in getattr(self, "_gauges", ()):
            gauge.republish()


# How often an engine's gauges are given to Ray again; Ray's metrics agent reports every few seconds.
REPUBLISH_S = 2.0


def _start_republishing(metrics: EngineMetrics) -> None:
    import threading
    import weakref

    ref = weakref.ref(metrics)

    def loop() -> None:
        while (alive := ref()) is not None:
            alive.republish()
            del alive
            time.sleep(REPUBLISH_S)

    threading.Thread(target=loop, name="engine-metrics-republish", daemon=True).start()
