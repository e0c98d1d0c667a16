"""The sandbox's OpenAPI document is its contract: schemathesis, every check, against the live service.

Examples, boundary coverage, generated requests (valid and not) and stateful sequences for every
operation, derandomized with a fixed number of examples: no 5xx, every status, content type and
body as documented, schema-valid requests accepted (the limits carry this service's maxima) and
invalid ones refused. Generated snippets really run, in the service's isolation.
"""

from __future__ import annotations

import httpx
import pytest

from tests.contract import conformance

from .conftest import Service

pytestmark = pytest.mark.timeout(600)


def test_the_sandbox_keeps_its_openapi_contract(service: Service) -> None:
    failures, scenarios = conformance(service.url, {"generation": {"max-examples": 8}})
    assert scenarios >= 4, scenarios
    assert not failures, "\n".join(failures)


def test_the_document_says_what_the_service_does(service: Service) -> None:
    document = httpx.get(service.url + "/openapi.json").json()
    run = document["paths"]["/v1/run"]["post"]["responses"]
    assert {"200", "400", "413", "422", "429", "503"} <= set(run)
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
