"""The OpenAPI document against the real gateway, with a schema-driven fuzzer (schemathesis).

Every operation gets requests generated from the document alone. The gateway must never answer
5xx, its answers must match the documented statuses, content types, headers and schemas, and a
request the document calls valid must not be refused, except for the rules OpenAPI cannot state:

- the image's content (random bytes are no photo): ``not_an_image``, ``corrupt_image``,
  ``empty_file``, ``unsupported_format``, ``image_too_large``;
- whether a version or label exists on the server: ``not_found`` when one is asked for;
- ``version`` and ``version_label`` together (mutually exclusive; stated in their descriptions):
  exactly 400 ``invalid_parameter``.

The gateway runs as a subprocess (``python -m gateway``) in front of the tiny model server, with an
API key and a rate limit high enough for the run, so both appear in the document it serves.
"""

from __future__ import annotations

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

from gateway.launcher import GatewayProcess

pytestmark = pytest.mark.integration

KEY = "fuzz-key"
CONTENT_CODES = frozenset(
    {"not_an_image", "corrupt_image", "empty_file", "unsupported_format", "image_too_large"}
)
"""Refusals that depend on the image bytes, which no schema can describe."""


@pytest.fixture(scope="module")
def gateway(tiny_server):
    env = {
        "SERVING_GRPC_ADDRESS": tiny_server.grpc_address,
        "GATEWAY_API_KEY": KEY,
        "RATE_LIMIT": "100000/minute",
        "MAX_BATCH_IMAGES": "4",
    }
    with GatewayProcess(env) as process:
        yield process


def _check(case, gateway) -> None:
    response = case.call_and_validate(
        base_url=gateway.url,
        headers={"X-API-Key": KEY},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
        timeout=60,
    )
    if response.status_code < 400:
        return
    code = response.json()["error"]["code"]
    query = case.query or {}
    if "version" in query and "version_label" in query:
        assert (response.status_code, code) == (400, "invalid_parameter")
        return
    allowed = set(CONTENT_CODES)
    if "version" in query or "version_label" in query:
        allowed.add("not_found")
    assert code in allowed, (
        f"{case.method} {case.path} query={query} media={case.media_type}: the document calls "
        f"this request valid, the gateway answered {response.status_code} {code}: "
        f"{response.json()['error']['message']}"
    )


def test_the_gateway_keeps_every_promise_of_its_openapi_document(gateway):
    schema = schemathesis.openapi.from_url(
        gateway.url + "/openapi.json", headers={"X-API-Key": KEY}
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /predict",
        "POST /predict_batch",
        "GET /classes",
        "GET /health",
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            _check(case, gateway)

        fuzz()
