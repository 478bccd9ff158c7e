"""schemathesis fuzzes the running API from its own OpenAPI document: no answer is a
5xx, and every answer matches the document (status codes, content types, schemas).

The number of examples per operation is bounded so the whole run stays well
under a minute; ``ELEMTA_API_FUZZ_EXAMPLES`` raises it for a longer campaign.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.apiserver import ApiProcess
from support.natsserver import NatsServer

EXAMPLES = int(os.environ.get("ELEMTA_API_FUZZ_EXAMPLES", "12"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def running_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    workdir = tmp_path_factory.mktemp("api-fuzz")
    server = NatsServer(workdir / "nats")
    server.start()
    api = ApiProcess(workdir, server.url, with_queue=True).start()
    yield api
    api.stop()
    server.stop()


def test_the_api_answers_every_generated_request_as_its_document_says(
    running_api: ApiProcess,
) -> None:
    # schemathesis's pytest plugin (lazy schemas) does not run under this pytest, so
    # each operation's strategy is driven by Hypothesis here.
    schema = schemathesis.openapi.from_url(running_api.url + "/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    headers = running_api.headers("admin")

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        run()


def test_the_document_is_openapi_3_1_with_a_bearer_scheme(running_api: ApiProcess) -> None:
    import httpx

    doc = httpx.get(running_api.url + "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "http", "scheme": "bearer"}
    page = httpx.get(running_api.url + "/api/v1/docs")
    assert page.status_code == 200 and "openapi.json" in page.text
