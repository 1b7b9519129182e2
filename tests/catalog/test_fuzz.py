"""The admin API fuzzed from its own OpenAPI document (schemathesis): valid and invalid requests to every
operation, as an admin. No answer may be a server error, and every answer must be one the document
lists, in the shape it describes. Bounded: a few examples per operation, derandomized, no example
database written to the working tree."""

from __future__ import annotations

import asyncio
import threading
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
from tests.catalog.conftest import pg_schema, sqlite_url
from tests.catalog.support import ADMIN, make_gateway

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
START_TIMEOUT_S = 60
EXAMPLES = 10  # per operation and mode: about 600 requests per database


class ServedGateway:
    """A gateway on its own event loop in a thread: the fuzzer's HTTP calls block, the gateway must not."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = 0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-gateway", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        # Routing probes are slow for fuzzed addresses and not what is tested here.
        gw = make_gateway(self.url, routing={"health_interval_s": 3600, "probe_timeout_s": 0.2})
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await gw.start()
        try:
            self.port = gw.http_port
            self._ready.set()
            await self._stop.wait()
        finally:
            await gw.stop(grace_s=0.5)

    def __enter__(self) -> ServedGateway:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self.error is not None or not self.port:
            raise RuntimeError(f"the gateway did not start: {self.error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)
        assert not self._thread.is_alive(), "the fuzzed gateway did not stop"


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
        with ServedGateway(url) as gateway:
            yield f"http://127.0.0.1:{gateway.port}"


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
