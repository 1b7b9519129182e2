"""Alembic, configured in code: no ``alembic.ini``; the scripts live in the repo's ``migrations/``.

``migrations/`` at the top of the repository is the authoritative copy. ``gateway/migrations`` is a
symlink to it, which makes the scripts package data: a wheel carries them as ``gateway/migrations``
and every install (editable or not) finds them next to the package. ``SONIC_GATEWAY_MIGRATIONS``
points elsewhere (e.g. migrations under development).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, make_url

from gateway.catalog.db import is_sqlite, make_engine


class MigrationsNotFound(RuntimeError):
    pass


def migrations_dir() -> Path:
    override = os.environ.get("SONIC_GATEWAY_MIGRATIONS")
    candidates = [Path(override)] if override else []
    package = Path(__file__).resolve().parents[1]
    candidates += [package / "migrations", package.parent / "migrations"]
    for path in candidates:
        if (path / "env.py").is_file():
            return path
    raise MigrationsNotFound(
        f"the catalog migrations were not found (looked in {', '.join(map(str, candidates))}); "
        "set SONIC_GATEWAY_MIGRATIONS to the migrations/ directory of the sonic-gateway sources"
    )


def alembic_config(url: str, engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # '%' is ConfigParser interpolation; URLs with escaped passwords contain it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(url: str, revision: str = "head", engine: Engine | None = None) -> None:
    command.upgrade(alembic_config(url, engine), revision)


def downgrade(url: str, revision: str = "base", engine: Engine | None = None) -> None:
    command.downgrade(alembic_config(url, engine), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()


def upgrade_url(url: str) -> str | None:
    """``sonic-gateway db upgrade``: migrate ``url`` to the newest revision; returns it."""
    engine = make_engine(url)
    try:
        upgrade(url, engine=engine)
        return current_revision(engine)
    finally:
        engine.dispose()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other databases and in-memory SQLite."""
    if not is_sqlite(url):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if absent): workers of one gateway starting together
    migrate one at a time. flock is independent of the POSIX locks SQLite itself takes."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no worker processes to race with
        yield
        return
    with path.open("ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # held for one migration at most
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_sqlite(url: str, engine: Engine) -> None:
    """Create and migrate a SQLite catalog to the newest schema (the embedded database is the
    gateway's own: no operator step)."""
    path = sqlite_path(url)
    if path is None:
        upgrade(url, engine=engine)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path):
        if not is_current(engine):
            upgrade(url, engine=engine)
