from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from gateway.catalog import migrate
from gateway.catalog.db import make_engine
from gateway.catalog.models import Base


def _drift(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        diff: list[object] = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        return diff


def test_upgrade_produces_exactly_the_orm_schema(migrated_engine: Engine) -> None:
    assert _drift(migrated_engine) == []
    assert migrate.is_current(migrated_engine)


def test_downgrade_to_base_then_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(db_url, engine=engine)
        migrate.downgrade(db_url, "base", engine=engine)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert migrate.current_revision(engine) is None
        migrate.upgrade(db_url, engine=engine)
        assert _drift(engine) == []
    finally:
        engine.dispose()


def test_migrations_dir_is_found_from_the_package() -> None:
    assert (migrate.migrations_dir() / "versions").is_dir()
    assert migrate.head_revision() == "0002_consistency"
