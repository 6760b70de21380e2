"""Schemathesis against the apps' own OpenAPI documents, in process: no 5xx, and every answer as documented.

The single-service app (the monolith shop) and the four-service shop's gateway each serve
``/openapi.json``; every operation in it is called with generated data, valid and not, and each
response must be no server error and conform to the status, content type and schema the document
declares for it. ``TWOFOLD_FUZZ_EXAMPLES`` sets the examples per operation (``make fuzz`` raises it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from examples.shop import shop as shop_system
from tests.http import LEAKS, QUERY_TIMEOUT
from tests.monolith import shop
from twofold.embedded import embedded_runtimes
from twofold.http import create_app
from twofold.http.gateway import gateway_in_process
from twofold.readmodels.sqlite import SQLiteReadStore
from twofold.runtime import Runtime
from twofold.store.sqlite import SQLiteEventStore

EXAMPLES = int(os.environ.get("TWOFOLD_FUZZ_EXAMPLES", "10"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a first call may wait on a projection or the SQLite files; time is not the point
    suppress_health_check=list(HealthCheck),  # the fixtures are module-wide on purpose: one app per run
    database=None,  # a fresh search each run; no examples folder left in the working tree
)


def _schema(app: FastAPI) -> Iterator[OpenApiSchema]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema
    finally:
        # Schemathesis runs the app's lifespan in its own event loop thread and would keep it open
        # until the interpreter exits; stop the runtime (and close its files) with the module instead.
        asgi.shutdown_lifespans()


@pytest.fixture(scope="module")
def single_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenApiSchema]:
    folder = tmp_path_factory.mktemp("single")
    runtime = Runtime(
        shop, store=SQLiteEventStore(folder / "events.db"), read_store=SQLiteReadStore(folder / "read.db")
    )
    yield from _schema(create_app(runtime, query_timeout=QUERY_TIMEOUT))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenApiSchema]:
    folder = tmp_path_factory.mktemp("gateway")
    # Each service's event store in the folder; its read store goes beside it.
    environ = {f"TWOFOLD_{name.upper()}_DATABASE_URL": f"sqlite:///{folder / name}.db" for name in shop_system.names}
    runtimes = embedded_runtimes(shop_system, environ=environ)
    yield from _schema(gateway_in_process(shop_system, runtimes, query_timeout=QUERY_TIMEOUT))


# Not these two: the 504 a client asks for is allowed below; and a document cannot say every rule a
# command checks (a decimal's digits, a cross-field rule), so a schema-valid body may still be 422.
EXCLUDED = [not_a_server_error, positive_data_acceptance]


def _no_server_error(case: schemathesis.Case, response: Response) -> None:
    """No 5xx, but for the one a client asks for: a read-your-writes position the read models never reach."""
    waited = response.status_code == 504 and "x-min-position" in {k.lower() for k in case.headers or {}}
    assert response.status_code < 500 or waited, f"{case.method} {case.formatted_path}: {response.status_code}"
    assert not [leak for leak in LEAKS if leak in response.text], response.text


def _fuzz(schema: OpenApiSchema) -> None:
    """Every operation, with data its document accepts and data it refuses; the first failure fails the test."""
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the document declares no operations"
    for operation in operations:
        cases = st.one_of(operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))

        @FUZZ
        @given(case=cases)
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            case.validate_response(response, excluded_checks=EXCLUDED)
            _no_server_error(case, response)

        call()


# Schemathesis's own pytest integration (`from_fixture(...).parametrize()`) reads a private
# attribute pytest 9 no longer has, so each test walks the document's operations itself.
def test_the_single_service_app_answers_every_generated_request_as_its_openapi_document_says(
    single_service: OpenApiSchema,
) -> None:
    _fuzz(single_service)


def test_the_gateway_answers_every_generated_request_as_its_openapi_document_says(gateway: OpenApiSchema) -> None:
    _fuzz(gateway)
