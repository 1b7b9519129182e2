"""Catalog fixtures: a migrated SQLite file per test, and PostgreSQL when SONIC_TEST_DATABASE_URL is set."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text

from gateway.app import Gateway
from gateway.catalog import migrate
from gateway.catalog.db import make_engine
from gateway.frontends.http.app import create_http_app
from tests.catalog.support import make_gateway

PG_URL = os.environ.get("SONIC_TEST_DATABASE_URL", "")
PG_SKIP = "set SONIC_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run"


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (dropped afterwards), selected through the connection's search_path."""
    with pg_schema() as url:
        yield url


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    if not PG_URL:
        pytest.skip(PG_SKIP)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite catalog migrated once per session (the migrations themselves: test_migrations.py)."""
    path = tmp_path_factory.mktemp("migrated") / "catalog.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(url, engine=engine)
    engine.dispose()
    return path


@pytest.fixture
def migrated_engine(db_url: str, migrated_sqlite: Path) -> Iterator[Engine]:
    if db_url.startswith("sqlite:///"):
        # A copy of the session's migrated file: the same schema, without migrating each test anew.
        shutil.copyfile(migrated_sqlite, db_url.removeprefix("sqlite:///"))
        engine = make_engine(db_url)
    else:
        engine = make_engine(db_url)
        migrate.upgrade(db_url, engine=engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def gateway(migrated_engine: Engine, db_url: str) -> AsyncIterator[Gateway]:
    """The catalog open (as Gateway.start opens it), without the network listeners."""
    gw = make_gateway(db_url)
    await gw.catalog.start()
    try:
        yield gw
    finally:
        await gw.catalog.stop()


@pytest.fixture(scope="session")
def http_apps() -> dict[str, FastAPI]:
    return {}


@pytest.fixture
async def client(gateway: Gateway, http_apps: dict[str, FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API of one app per session, pointed at each test's gateway: FastAPI builds every
    route's state on an app's first request (~0.1 s here, per app), and the admin API finds its
    gateway in ``app.state`` on each request. (These gateways serve no inference: no pools started.)"""
    app = http_apps.get("app")
    if app is None:
        app = http_apps["app"] = create_http_app(gateway)
    app.state.gateway = gateway
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http
