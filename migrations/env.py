"""Alembic environment for the catalog; configured from code by ``gateway.catalog.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from gateway.catalog.db import make_engine
from gateway.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine: Engine | None = config.attributes.get("engine")
    owned = engine is None
    if engine is None:
        url = config.get_main_option("sqlalchemy.url")
        assert url is not None
        engine = make_engine(url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # SQLite changes a table by rebuilding it (copy, drop, rename): with foreign keys on, the
                # drop cascades into every table that refers to it. The pragma works only outside a
                # transaction; it is checked by foreign_key_check afterwards and restored.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            try:
                context.configure(
                    connection=connection, target_metadata=target_metadata, render_as_batch=True
                )
                with context.begin_transaction():
                    context.run_migrations()
                connection.commit()
                if sqlite:
                    _check_foreign_keys(connection)
            finally:
                if sqlite:
                    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                    connection.commit()
    finally:
        if owned:
            engine.dispose()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        raise RuntimeError(f"the migration left rows whose references point nowhere: {broken[:5]}")


if context.is_offline_mode():
    run_offline()
else:
    run_online()
