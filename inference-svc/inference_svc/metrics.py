"""Prometheus metrics of the engine, named after vLLM's set with the chatforge_ prefix.

The registry is injectable: the Serve replica exports its own, tests use a fresh one each, and the
engine itself never touches HTTP. Latencies are histograms in seconds; counters end in _total.
"""

from __future__ import annotations

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


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
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
