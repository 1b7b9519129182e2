"""An unreadable catalog is logged with the reason an operator can act on, once per outage."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import create_engine

from gateway.catalog.sync import CatalogSync
from gateway.routing.registry import Registry
from tests.support.net import free_port


async def _warning(engine_url: str, caplog: pytest.LogCaptureFixture) -> str:
    sync = CatalogSync(Registry(), [])
    sync.engine = create_engine(engine_url)
    try:
        with caplog.at_level(logging.WARNING, "gateway.catalog.sync"):
            assert await sync.refresh() is False
            assert await sync.refresh() is False  # the same outage: no second line
    finally:
        sync.engine.dispose()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.catalog.sync"]
    assert len(lines) == 1, lines
    return lines[0]


async def test_a_database_that_is_down_is_not_called_unmigrated(caplog: pytest.LogCaptureFixture) -> None:
    line = await _warning(
        f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2", caplog
    )
    assert "unreachable" in line
    assert "db upgrade" not in line
    assert "migrated" not in line


async def test_an_unmigrated_database_says_how_to_migrate(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # db_url is an empty database: SQLite says "no such table", PostgreSQL "relation ... does not exist".
    line = await _warning(db_url, caplog)
    assert "sonic-gateway db upgrade" in line
