"""The sandbox service's request limits: bodies bounded while they stream, strict types.

The service runs as its own process (`service` fixture); its peak resident memory is read from
/proc/<pid>. A 100 MiB chunked body used to be read whole (memory 122 -> 426 MiB) and answered 200.
"""

from __future__ import annotations

import json

import httpx
import pytest
from sandbox.app import max_body_bytes
from sandbox.settings import Settings

from tests.oversize import MIB, PeakRSS, repeated, send

from .conftest import Service

MODES = ["content-length", "chunked"]
LIMIT = max_body_bytes(Settings())
IN_FLIGHT = 8 * MIB  # what socket buffers may have taken when the answer came


@pytest.mark.parametrize("mode", MODES)
def test_a_huge_body_is_413_after_at_most_the_limit(service: Service, mode: str) -> None:
    body, length = repeated(b'{"code": "', b"#" * 1024, 100 * 1024, b'"}')
    with PeakRSS(service.pid) as peak:
        sent = send(service.url, "/v1/run", body, length=length if mode == "content-length" else None)
    assert sent.status == 413 and "limit" in sent.json()["detail"], sent.body
    most = IN_FLIGHT if mode == "content-length" else LIMIT + IN_FLIGHT
    assert sent.body_bytes < most, f"answered after {sent.body_bytes} bytes of {length}"
    assert sent.seconds < 5 and peak.grew_mib < 32, (sent.seconds, peak.grew_mib)
    assert service.client.healthy()


@pytest.mark.parametrize("mode", MODES)
def test_a_body_within_the_limit_runs(service: Service, mode: str) -> None:
    data = json.dumps({"code": "print(6 * 7)"}).encode()
    sent = send(service.url, "/v1/run", [data], length=len(data) if mode == "content-length" else None)
    assert sent.status == 200 and sent.json()["stdout"] == "42\n", sent.body


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout_s", "5"), ("memory_mb", "256"), ("memory_mb", 256.5), ("output_bytes", True)],
)
def test_types_are_strict(service: Service, field: str, value: object) -> None:
    r = httpx.post(service.url + "/v1/run", json={"code": "print(1)", field: value})
    assert r.status_code == 422 and field in r.text, r.text


def test_the_schema_states_the_services_limits(service: Service) -> None:
    props = httpx.get(service.url + "/openapi.json").json()["components"]["schemas"]["RunRequest"][
        "properties"
    ]
    s = Settings()
    assert props["timeout_s"]["anyOf"][0]["maximum"] == s.max_timeout_s
    assert props["memory_mb"]["anyOf"][0]["maximum"] == s.max_memory_mb
    assert props["output_bytes"]["anyOf"][0]["maximum"] == s.max_output_bytes
