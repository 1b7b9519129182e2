"""The usage (provenance) recorder's buffer as metrics, sampled by the recorder at each flush.

The recorder keeps plain running totals (cheap, lock-free on the hot path); at each flush it hands
them here and the differences since the last flush become counter increments, so the counters stay
correct across ``--workers N`` processes (a scrape-time collector would see one worker only).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.observability.metrics import GatewayMetrics


class BufferTotals(Protocol):
    """What the batched recorder exposes (see gateway.catalog.recorder.BatchedUsageRecorder)."""

    dropped: int
    written: int
    failures: int


class ProvenanceMetrics:
    """The recorder's flush hook: ``sample(recorder, waiting)``."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self._dropped = self._written = self._failures = 0

    def sample(self, totals: BufferTotals, waiting: int) -> None:
        m = self.metrics
        m.provenance_buffer.set(waiting)
        self._dropped = _advance(m.provenance_dropped.inc, self._dropped, totals.dropped)
        self._written = _advance(m.provenance_written.inc, self._written, totals.written)
        self._failures = _advance(m.provenance_failures.inc, self._failures, totals.failures)


def _advance(inc: Callable[[float], None], seen: int, now: int) -> int:
    if now > seen:
        inc(now - seen)
    return max(seen, now)
