"""The OpenAPI document is the gateway's contract: schemathesis, every check, against a live gateway.

A gateway with keys required (so the security scheme and every 401 are exercised) is fuzzed from
its own `/openapi.json`: examples, boundary coverage and generated requests, valid and not, for
every operation, with every built-in check (no 5xx, statuses and content types and headers as
documented, response bodies as documented, valid data accepted, invalid data refused, requests
without a key refused). Derandomized with a fixed number of examples, so CI is reproducible.

"Valid data accepted" has one documented exception: a refusal the schema cannot express (turn
order, context length, a sum of characters) is a 400 whose code the operation lists as `x-checks`,
and `refusal_is_declared` checks exactly that.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from gateway.auth import KeyStore

from tests.contract import conformance
from tests.gateway.conftest import PEPPER

pytestmark = pytest.mark.timeout(600)
EXAMPLES = 8  # generated requests per operation (plus its examples and coverage cases)


@pytest.fixture(scope="module")
def live(launch):
    return launch(
        auth="required",
        rate_request_burst=100_000,
        rate_requests_per_min=1e9,
        rate_write_burst=100_000,
        rate_writes_per_min=1e9,
        max_tokens_limit=8,  # generations stay short
        max_n=2,
    )


@pytest.fixture(scope="module")
def admin_key(redis_server) -> str:
    key, _ = KeyStore(redis_server, PEPPER).create("schemathesis", ["admin"])
    return key


@pytest.fixture(scope="module")
def document(live) -> dict[str, Any]:
    return httpx.get(live.url + "/openapi.json").json()


@schemathesis.check
def refusal_is_declared(ctx: Any, response: Any, case: Any) -> bool | None:
    """A request the schema allows may be refused with 400 only for a check the operation lists."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    declared = case.operation.definition.raw.get("responses", {}).get("400", {}).get("x-checks", [])
    if not declared:  # positive_data_acceptance refuses any 400 there
        return None
    code = response.json()["error"]["code"]
    if code not in declared:
        raise AssertionError(
            f"valid data refused with 400 {code!r}, not one of the declared checks {declared}"
        )
    return None


def test_the_gateway_keeps_its_openapi_contract(live, admin_key, document):
    # Where the schema cannot say everything (x-checks), valid data may meet a 400: the check
    # above then holds the code to the declared list.
    relaxed = [
        {
            "include-path": path,
            "include-method": method.upper(),
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
                }
            },
        }
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if operation["responses"].get("400", {}).get("x-checks")
    ]
    failures, scenarios = conformance(
        live.url,
        {
            "headers": {"Authorization": f"Bearer {admin_key}"},
            "generation": {"max-examples": EXAMPLES},
            "max-stream-events": 50,
            "operations": relaxed,
        },
    )
    assert scenarios > len(document["paths"]), scenarios
    assert not failures, "\n".join(failures)


def test_the_document_says_what_the_server_does(document, live):
    """400 not 422, the error body, the bearer scheme, /metrics as text, limits with the settings."""
    assert "bearer" == document["components"]["securitySchemes"]["apiKey"]["scheme"]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert "422" not in chat["responses"]
    for status in ("400", "401", "404", "413", "429", "502", "503"):
        assert chat["responses"][status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorBody"
        }
    assert chat["security"] == [{"apiKey": []}]
    assert "403" in document["paths"]["/v1/jobs"]["post"]["responses"]
    assert "409" in document["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    request = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert request["n"]["maximum"] == live.settings.max_n == 2
    assert request["messages"]["maxItems"] == live.settings.max_messages
    assert httpx.get(live.url + "/metrics").headers["content-type"].startswith("text/plain")
