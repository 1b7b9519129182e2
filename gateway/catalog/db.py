"""Opening catalog engines: SQLite gets foreign keys and thread sharing, everything gets pre-ping."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: Any) -> Engine:
    if is_sqlite(url):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
    else:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    if is_sqlite(url):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def why_unreadable(exc: BaseException) -> str:
    """Why the catalog could not be read, in words an operator can act on (and the driver's line).

    A missing table means an unmigrated database; anything else (refused connection, timeout,
    authentication) means the database itself is unreachable or failing, not that it needs migrating.
    """
    origin = getattr(exc, "orig", None) or exc
    # PostgreSQL's undefined_table (by code: the message is localised), SQLite's words.
    if getattr(origin, "sqlstate", None) == "42P01" or "no such table" in str(origin).lower():
        return f"the catalog schema is missing: run `sonic-gateway db upgrade` ({brief(exc)})"
    return f"the database is unreachable or failing ({brief(exc)})"


def brief(exc: BaseException) -> str:
    """A database error in one line for a log: the driver's message, without SQLAlchemy's SQL dump."""
    origin = getattr(exc, "orig", None) or exc
    return f"{type(origin).__name__}: {str(origin).splitlines()[0] if str(origin) else ''}"
