from __future__ import annotations

import asyncio
import time

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.catalog.db import make_engine
from gateway.catalog.models import Usage
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.core.recording import UsageEvent
from tests.support.net import free_port


def event(
    job: str = "job-1", version: str = "1", backend: str = "lab/1", n: int = 10, **kw: object
) -> UsageEvent:
    values: dict[str, object] = {
        "model": "emtrack",
        "version_requested": "",
        "version_served": version,
        "facility": backend.split("/")[0],
        "backend_id": backend,
        "subject": "alice",
        "issuer": "https://issuer",
        "job_id": job,
        "dataset": "protodune-sp:np04_reco_run5387",
        "inferences": n,
    }
    values.update(kw)
    return UsageEvent(**values)  # type: ignore[arg-type]


def rows(engine: Engine) -> list[Usage]:
    with Session(engine) as session:
        return list(session.scalars(select(Usage).order_by(Usage.id)))


async def test_flushes_upsert_increment(migrated_engine: Engine) -> None:
    recorder = BatchedUsageRecorder(interval_s=60)
    await recorder.start(migrated_engine)
    t0 = time.time()
    for i in range(5):
        recorder.record(event(n=10, timestamp=t0 + i))
    recorder.record(event(backend="hpc/2", n=3))
    recorder.record(event(job="", n=1))
    assert await recorder.flush() == 7
    for _ in range(3):
        recorder.record(event(n=10, timestamp=t0 + 10))
    await recorder.stop()  # flushes on shutdown
    got = {(u.job_id, u.backend): u for u in rows(migrated_engine)}
    assert set(got) == {("job-1", "lab/1"), ("job-1", "hpc/2"), ("", "lab/1")}
    main = got[("job-1", "lab/1")]
    assert (main.n_requests, main.n_inferences) == (8, 80)
    assert main.dataset == "protodune-sp:np04_reco_run5387"
    assert main.last_seen.timestamp() > main.first_seen.timestamp()
    assert recorder.pending == 0
    assert recorder.dropped == 0


async def test_batch_size_triggers_flush(migrated_engine: Engine) -> None:
    recorder = BatchedUsageRecorder(batch_size=4, interval_s=60)
    await recorder.start(migrated_engine)
    try:
        for _ in range(4):
            recorder.record(event())
        for _ in range(200):
            if recorder.written == 4:
                break
            await asyncio.sleep(0.01)
        assert recorder.written == 4
    finally:
        await recorder.stop()


async def test_full_buffer_drops_and_counts() -> None:
    recorder = BatchedUsageRecorder(capacity=3)
    for _ in range(5):
        recorder.record(event())
    assert (recorder.pending, recorder.dropped) == (3, 2)


async def test_outage_keeps_events_until_the_database_is_back(db_url: str, migrated_engine: Engine) -> None:
    if db_url.startswith("sqlite"):
        dead = make_engine("sqlite:////nonexistent-dir/catalog.db")
    else:
        dead = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2")
    recorder = BatchedUsageRecorder(interval_s=60)
    await recorder.start(dead)
    for _ in range(3):
        recorder.record(event())
    assert await recorder.flush() == 0
    assert recorder.pending == 3
    assert recorder.failures == 1
    recorder.record(event())
    recorder.engine = migrated_engine  # the database is back
    assert await recorder.flush() == 4
    await recorder.stop()
    dead.dispose()
    [usage] = rows(migrated_engine)
    assert usage.n_requests == 4


async def test_one_job_with_two_datasets_keeps_both(migrated_engine: Engine) -> None:
    recorder = BatchedUsageRecorder(interval_s=60)
    await recorder.start(migrated_engine)
    recorder.record(event(dataset="dune:run_a", n=5))
    recorder.record(event(dataset="dune:run_b", n=7))
    await recorder.flush()
    recorder.record(event(dataset="dune:run_a", n=1))  # a later batch adds to the right row
    await recorder.stop()
    got = {u.dataset: (u.n_requests, u.n_inferences) for u in rows(migrated_engine)}
    assert got == {"dune:run_a": (2, 6), "dune:run_b": (1, 7)}


async def test_names_the_database_would_refuse_do_not_block_the_batch(migrated_engine: Engine) -> None:
    """Tags come from callers' headers: one value too long for its column (or with a NUL) must not
    fail the whole batch forever (PostgreSQL refuses both)."""
    recorder = BatchedUsageRecorder(interval_s=60)
    await recorder.start(migrated_engine)
    recorder.record(event(job="j" * 1000, dataset="d\x00" * 600))
    recorder.record(event(job="job-ok"))
    assert await recorder.flush() == 2
    await recorder.stop()
    got = {u.job_id: u.dataset for u in rows(migrated_engine)}
    assert got == {"j" * 256: "d" * 512, "job-ok": "protodune-sp:np04_reco_run5387"}
