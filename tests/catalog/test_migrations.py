from __future__ import annotations

import datetime as dt

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select, text

from gateway.catalog import migrate
from gateway.catalog import models as m
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
    assert migrate.head_revision() == "0005_usage_issuer_key"


def _usage(job: str, dataset: str, n: int, at: int) -> dict[str, object]:
    when = dt.datetime(2026, 1, 1, 0, 0, at, tzinfo=dt.UTC)
    return {
        "job_id": job, "dataset": dataset, "model": "emtrack", "version": "1", "facility": "lab",
        "backend": "lab/h:1", "subject": "alice", "issuer": "https://issuer", "n_requests": n,
        "n_inferences": 10 * n, "first_seen": when, "last_seen": when,
    }  # fmt: skip


def test_usage_keeps_every_dataset_across_the_dataset_key_migration(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(db_url, "0002_consistency", engine=engine)
        with engine.begin() as connection:
            connection.execute(insert(m.Usage), [_usage("job-1", "dune:a", 1, 1), _usage("job-2", "", 2, 2)])
        migrate.upgrade(db_url, engine=engine)
        with engine.begin() as connection:  # the same job with a second dataset is a row of its own
            connection.execute(insert(m.Usage), [_usage("job-1", "dune:b", 3, 3)])
            assert connection.execute(select(m.Usage.dataset).where(m.Usage.job_id == "job-1")).all() == [
                ("dune:a",),
                ("dune:b",),
            ]
        # Down again, the old key cannot tell them apart: one row, counts summed, the later dataset.
        migrate.downgrade(db_url, "0002_consistency", engine=engine)
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT job_id, dataset, n_requests, n_inferences FROM usage ORDER BY job_id")
            ).all()
        assert [tuple(r) for r in rows] == [("job-1", "dune:b", 4, 40), ("job-2", "", 2, 20)]
    finally:
        engine.dispose()


def test_rows_a_null_patch_broke_are_repaired(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(db_url, "0003_usage_dataset_key", engine=engine)
        with engine.begin() as connection:  # what PATCH {"storage_uris": null} used to commit
            connection.execute(
                text(
                    "INSERT INTO dataset (name, experiment, data_tier, format, storage_uris, metadata,"
                    " created_at) VALUES ('d', '', '', '', 'null', 'null', CURRENT_TIMESTAMP)"
                )
            )
            connection.execute(
                text("INSERT INTO model (name, description, created_at) VALUES ('m', '', CURRENT_TIMESTAMP)")
            )
            connection.execute(
                text(
                    "INSERT INTO model_version (model_id, version, platform, inputs, outputs, max_batch_size,"
                    " allowed_groups, created_by, tags, created_at) SELECT id, '1', '', 'null', '[]', 0,"
                    " 'null', '', 'null', CURRENT_TIMESTAMP FROM model"
                )
            )
        migrate.upgrade(db_url, engine=engine)
        with engine.connect() as connection:
            dataset = connection.execute(select(m.Dataset.storage_uris, m.Dataset.meta)).one()
            version = connection.execute(
                select(m.ModelVersion.inputs, m.ModelVersion.outputs, m.ModelVersion.allowed_groups,
                       m.ModelVersion.tags)
            ).one()  # fmt: skip
        assert tuple(dataset) == ([], {})
        assert tuple(version) == ([], [], [], [])
    finally:
        engine.dispose()


def test_downgrade_keeps_the_rows_of_rebuilt_tables(db_url: str) -> None:
    """SQLite rebuilds a table to drop a column; with foreign keys on, dropping the old backend table
    cascaded into every deployment."""
    engine = make_engine(db_url)
    try:
        migrate.upgrade(db_url, engine=engine)
        with engine.begin() as connection:
            connection.execute(insert(m.Facility).values(id=1, name="lab"))
            connection.execute(insert(m.Backend).values(id=1, facility_id=1, address="h:1"))
            connection.execute(insert(m.Model).values(id=1, name="toy"))
            connection.execute(insert(m.ModelVersion).values(id=1, model_id=1, version="1"))
            connection.execute(insert(m.Deployment).values(backend_id=1, model_version_id=1))
        migrate.downgrade(db_url, "0001_catalog", engine=engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT backend_id, model_version_id FROM deployment")).all() == [
                (1, 1)
            ]
            assert connection.execute(text("SELECT address FROM backend")).all() == [("h:1",)]
            if engine.dialect.name == "sqlite":  # foreign keys are enforced again afterwards
                assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()


def test_usage_of_one_subject_name_from_two_issuers_is_two_rows(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(db_url, engine=engine)
        elsewhere = {**_usage("job-1", "dune:a", 2, 2), "issuer": "https://elsewhere"}
        with engine.begin() as connection:
            connection.execute(insert(m.Usage), [_usage("job-1", "dune:a", 1, 1), elsewhere])
            assert len(connection.execute(select(m.Usage.id)).all()) == 2
        migrate.downgrade(db_url, "0004_repair_json_nulls", engine=engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT issuer, n_requests FROM usage")).all()
        assert [tuple(r) for r in rows] == [("https://elsewhere", 3)]
    finally:
        engine.dispose()
