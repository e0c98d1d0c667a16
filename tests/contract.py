"""Run schemathesis against a live service from its own OpenAPI document, and say what failed.

`conformance(url, config)` loads `url + "/openapi.json"` and runs schemathesis's engine — what `st run`
runs: the examples, boundary-coverage, fuzzing and stateful phases, every built-in check enabled —
and returns one line per failing check (with a curl command that reproduces it) and per error.
Pytest's own integration (`schemathesis.pytest.from_fixture`) is not used: it does not run under
this pytest. A run is reproducible when the config is deterministic (`generation.deterministic`,
a fixed `max-examples` and `seed`).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.engine import Status, from_schema
from schemathesis.engine import events as ev

# What every run here shares: the same draws every time, bounded, no example database on disk.
BASE_CONFIG: dict[str, Any] = {
    "seed": 0,
    "generation": {"deterministic": True, "database": "none"},
    "request-timeout": 30,
    # Schemathesis's default list for invalid data, plus 413: an over-long field can make the body
    # larger than the service's body limit, and 413 is then the documented refusal.
    "checks": {
        "negative_data_rejection": {
            "expected-statuses": [
                "400",
                "401",
                "403",
                "404",
                "405",
                "406",
                "409",
                "413",
                "415",
                "422",
                "428",
                "429",
                "5xx",
            ]
        }
    },
}


def conformance(url: str, config: dict[str, Any]) -> tuple[list[str], int]:
    """Failures (empty when the service keeps its contract) and how many scenarios ran."""
    merged = {
        **BASE_CONFIG,
        **config,
        "generation": {**BASE_CONFIG["generation"], **config.get("generation", {})},
    }
    schema = schemathesis.openapi.from_url(
        url + "/openapi.json", config=schemathesis.Config.from_dict(merged)
    )
    failures: list[str] = []
    scenarios = 0
    for event in from_schema(schema).execute():
        if isinstance(event, ev.ScenarioFinished):
            scenarios += 1
            if event.status in (Status.FAILURE, Status.ERROR):
                failures.extend(_failures(event))
        elif isinstance(event, ev.NonFatalError):
            failures.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, ev.FatalError):
            raise event.exception
        elif isinstance(event, ev.EngineFinished):
            failures.extend(f"after the run: {f.title}: {f.message}" for f in event.failures)
    return sorted(set(failures)), scenarios


def _failures(event: ev.ScenarioFinished) -> list[str]:
    out = []
    for nodes in event.recorder.checks.values():
        for node in nodes:
            if node.status is Status.FAILURE and node.failure_info is not None:
                failure = node.failure_info.failure
                out.append(
                    f"[{event.phase}] {event.label}: {node.name}: {failure.title}: {failure.message}\n"
                    f"    {node.failure_info.code_sample}"
                )
    return out
