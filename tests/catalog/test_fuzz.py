"""The admin API fuzzed from its own OpenAPI document (schemathesis): valid and invalid requests to every
operation, as an admin. No answer may be a server error, and every answer must be one the document
lists, in the shape it describes. Bounded: a few examples per operation, derandomized, no example
database written to the working tree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.catalog import migrate
from gateway.catalog.db import make_engine
from gateway.demo import GatewayThread
from tests.catalog.conftest import pg_schema, sqlite_url
from tests.catalog.support import ADMIN, make_gateway

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
EXAMPLES = 6  # per operation and mode: about 360 requests per database


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis keeps caches in ./.hypothesis: not in the working tree."""
    set_hypothesis_home_dir(str(tmp_path_factory.mktemp("hypothesis")))
    try:
        yield
    finally:
        set_hypothesis_home_dir(None)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    fresh = (
        pg_schema()
        if request.param == "postgres"
        else nullcontext(sqlite_url(tmp_path_factory.mktemp("fuzz")))
    )
    with fresh as url:
        engine = make_engine(url)
        migrate.upgrade(url, engine=engine)
        engine.dispose()
        # Routing probes are slow for fuzzed addresses and not what is tested here.
        gateway = make_gateway(url, routing={"health_interval_s": 3600, "probe_timeout_s": 0.2})
        with GatewayThread(gateway):
            yield f"http://127.0.0.1:{gateway.http_port}"


def _fuzz(case: Any, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=ADMIN, checks=CHECKS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors_and_only_documented_answers(served: str, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json").include(path_regex="^/api/v1/")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported as is
        )
        @given(case=operation.as_strategy(mode))
        def fuzz(case: Any) -> None:
            _fuzz(case, served)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports a group of failures
            failures.append(f"{operation.label}: {exc}")
    assert operations >= 30
    assert failures == [], "\n\n".join(failures)
