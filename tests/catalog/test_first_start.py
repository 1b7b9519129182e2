"""The embedded default works on first start; a default-settings gateway in a test writes nothing to
the working directory; PostgreSQL stays the operator's to migrate, and start says so."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from gateway.app import Gateway
from gateway.catalog import migrate
from gateway.catalog import models as m
from gateway.catalog.db import make_engine
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.config import load_settings
from gateway.core.recording import UsageEvent

EVENT = UsageEvent(
    model="toy", version_requested="", version_served="1", facility="lab", backend_id="lab/h:1",
    subject="alice", issuer="https://issuer", job_id="job-1", dataset="dune:run1", inferences=4,
)  # fmt: skip


def _gateway(recorder: BatchedUsageRecorder | None = None, **values: object) -> Gateway:
    return Gateway(load_settings(None, **values), recorder=recorder, metrics_registry=CollectorRegistry())


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SONIC_GATEWAY_DATABASE_URL", raising=False)
    return tmp_path


async def test_serve_creates_and_migrates_the_default_sqlite_and_records_the_first_request(
    workdir: Path,
) -> None:
    recorder = BatchedUsageRecorder(interval_s=3600)
    gw = _gateway(recorder)  # as `serve` builds it: usage goes to the database
    await gw.catalog.start()
    try:
        gw.recorder.record(EVENT)
        assert await recorder.flush() == 1
        assert recorder.pending == 0
    finally:
        await gw.catalog.stop()
    engine = make_engine(f"sqlite:///{workdir / 'sonic-gateway.db'}")
    try:
        assert migrate.is_current(engine)
        with Session(engine) as session:
            assert session.scalars(select(m.Usage.n_inferences)).all() == [4]
    finally:
        engine.dispose()


async def test_a_configured_sqlite_file_is_migrated_too(workdir: Path) -> None:
    gw = _gateway(BatchedUsageRecorder(), database_url="sqlite:///data/catalog.db")
    await gw.catalog.start()
    await gw.catalog.stop()
    engine = make_engine(f"sqlite:///{workdir / 'data' / 'catalog.db'}")
    try:
        assert migrate.is_current(engine)
    finally:
        engine.dispose()


async def test_a_default_gateway_embedded_in_a_test_writes_nothing_here(workdir: Path) -> None:
    gw = _gateway()
    await gw.catalog.start()
    try:
        with gw.catalog.session() as session:  # the catalog works: a scratch database
            session.add(m.Facility(name="lab"))
            session.commit()
            assert session.scalars(select(m.Facility.name)).all() == ["lab"]
    finally:
        await gw.catalog.stop()
    assert os.listdir(workdir) == []


@pytest.mark.postgres
async def test_an_unmigrated_postgresql_is_left_to_the_operator_and_start_says_so(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    gw = _gateway(BatchedUsageRecorder(), database_url=pg_url)
    with caplog.at_level(logging.ERROR, logger="gateway.catalog.service"):
        await gw.catalog.start()
        await gw.catalog.stop()
    assert "run `sonic-gateway db upgrade`" in caplog.text
    assert str(migrate.head_revision()) in caplog.text
    engine = make_engine(pg_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
