"""Usage provenance written to the catalog in batches, off the hot path.

``record()`` only appends to a bounded buffer (never blocks, never raises; counts what it drops when
full). A background task flushes every ``interval_s`` seconds, or sooner once ``batch_size`` events are
waiting, in ONE transaction that upsert-increments one ``usage`` row per (job, dataset, model, version,
backend, subject, issuer). Events leave the buffer only after their transaction committed: a database outage
loses nothing that fits in the buffer. ``stop()`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

from sqlalchemy import Engine, String
from sqlalchemy.dialects import postgresql, sqlite

from gateway.catalog.models import USAGE_KEY, Usage
from gateway.core.periodic import Periodic
from gateway.core.recording import UsageEvent
from gateway.observability.provenance import ProvenanceMetrics

log = logging.getLogger(__name__)

UsageKey = tuple[str, ...]  # the values of USAGE_KEY, in its order


@dataclass
class _Row:
    facility: str
    n_requests: int
    n_inferences: int
    first_seen: float
    last_seen: float


def _key(e: UsageEvent) -> UsageKey:
    values = {
        "job_id": e.job_id or "",
        "dataset": e.dataset or "",
        "model": e.model,
        "version": e.version_served,
        "backend": e.backend_id,
        "subject": e.subject,
        "issuer": e.issuer,
    }
    return tuple(_fit(values[column], column) for column in USAGE_KEY)


def aggregate(events: Iterable[UsageEvent]) -> dict[UsageKey, _Row]:
    rows: dict[UsageKey, _Row] = {}
    for e in events:
        key = _key(e)
        row = rows.get(key)
        if row is None:
            rows[key] = _Row(_fit(e.facility, "facility"), e.requests, e.inferences, e.timestamp, e.timestamp)
        else:
            row.n_requests += e.requests
            row.n_inferences += e.inferences
            row.first_seen = min(row.first_seen, e.timestamp)
            row.last_seen = max(row.last_seen, e.timestamp)
    return rows


def _length(column: str) -> int | None:
    column_type = Usage.__table__.c[column].type
    assert isinstance(column_type, String)
    return column_type.length


# The text columns' lengths, read from the model once (not for every event).
_LENGTHS = {column: _length(column) for column in (*USAGE_KEY, "facility")}


def _fit(value: str, column: str) -> str:
    """``value`` cut to the column's length, without NUL characters. The names come from callers'
    headers; one value the database refuses would fail its whole batch, flush after flush."""
    return value.replace("\x00", "")[: _LENGTHS[column]]


def _ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def write_usage(engine: Engine, events: list[UsageEvent]) -> int:
    """Upsert-increment ``events`` in one transaction; returns the number of rows touched."""
    rows = aggregate(events)
    if not rows:
        return 0
    dialect = engine.dialect.name
    insert: Any
    if dialect == "postgresql":
        insert = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"usage recording supports SQLite and PostgreSQL, not {dialect}")
    table = Usage.__table__
    c = table.c
    stmt = insert(table)
    # One statement for the whole batch (executemany), not one compiled per row.
    stmt = stmt.on_conflict_do_update(
        index_elements=[c[name] for name in USAGE_KEY],
        set_={
            "n_requests": c.n_requests + stmt.excluded.n_requests,
            "n_inferences": c.n_inferences + stmt.excluded.n_inferences,
            "last_seen": stmt.excluded.last_seen,
        },
    )
    params = [
        {
            **dict(zip(USAGE_KEY, key, strict=True)),
            "facility": row.facility,
            "n_requests": row.n_requests,
            "n_inferences": row.n_inferences,
            "first_seen": _ts(row.first_seen),
            "last_seen": _ts(row.last_seen),
        }
        for key, row in rows.items()
    ]
    with engine.begin() as connection:
        connection.execute(stmt, params)
    return len(rows)


class BatchedUsageRecorder:
    """A :class:`~gateway.core.recording.UsageRecorder` that writes to the catalog database."""

    def __init__(self, capacity: int = 100_000, batch_size: int = 1000, interval_s: float = 2.0) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.buffer: deque[UsageEvent] = deque()
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self.engine: Engine | None = None
        self._loop: Periodic | None = None
        self._failing = False
        self.observer: ProvenanceMetrics | None = None  # buffer metrics, sampled at each flush

    def record(self, event: UsageEvent) -> None:
        try:
            if len(self.buffer) >= self.capacity:
                self.dropped += 1
                return
            self.buffer.append(event)
            if self._loop is not None and len(self.buffer) >= self.batch_size:
                self._loop.wake()
        except Exception:  # pragma: no cover - never raise into the data path
            self.dropped += 1

    @property
    def pending(self) -> int:
        return len(self.buffer)

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        self._loop = Periodic(self.flush, self.interval_s, "usage-recorder")
        self._loop.start()

    async def flush(self) -> int:
        """Write everything buffered now (in batches); returns events written. Never raises."""
        total = 0
        waiting = len(self.buffer)
        while self.buffer and self.engine is not None:
            # Take a copy; events leave the buffer only once their transaction has committed.
            batch = list(islice(self.buffer, 0, self.batch_size))
            try:
                await asyncio.to_thread(write_usage, self.engine, batch)
            except Exception as exc:
                self.failures += 1
                if not self._failing:
                    log.warning(
                        "usage not written, kept for the next flush (%d pending): %s", self.pending, exc
                    )
                self._failing = True
                break
            if self._failing:
                log.info("usage recording resumed")
                self._failing = False
            for _ in range(len(batch)):
                self.buffer.popleft()
            total += len(batch)
            self.written += len(batch)
        if self.observer is not None:
            self.observer.sample(self, waiting)
        return total

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        await self.flush()
        if self.buffer:
            log.warning("%d usage events could not be written at shutdown", len(self.buffer))
