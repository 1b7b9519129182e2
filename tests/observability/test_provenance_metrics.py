"""The usage recorder's buffer depth, writes and drops, as metrics (real SQLite catalog)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.catalog import migrate
from gateway.catalog.db import make_engine
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.core.recording import UsageEvent
from gateway.observability.metrics import gateway_metrics
from gateway.observability.provenance import ProvenanceMetrics


def _event() -> UsageEvent:
    return UsageEvent("m", "", "1", "lab", "lab/1", "alice", "https://issuer", job_id="j", inferences=3)


async def test_buffer_depth_writes_and_drops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    engine = make_engine(url)
    migrate.upgrade(url, engine=engine)
    registry = CollectorRegistry()
    recorder = BatchedUsageRecorder(capacity=3, interval_s=60)
    recorder.observer = ProvenanceMetrics(gateway_metrics(registry))
    await recorder.start(engine)
    try:
        for _ in range(5):
            recorder.record(_event())

        def sample(name: str) -> float | None:
            return registry.get_sample_value(name)

        assert await recorder.flush() == 3
        assert sample("sonic_gateway_provenance_buffer_events") == 3
        assert sample("sonic_gateway_provenance_written_events_total") == 3
        assert sample("sonic_gateway_provenance_dropped_events_total") == 2
        assert sample("sonic_gateway_provenance_flush_failures_total") == 0
        recorder.record(_event())
        engine.dispose()
        (tmp_path / "catalog.db").unlink()
        (tmp_path / "catalog.db").mkdir()  # the database becomes unwritable: the flush fails
        assert await recorder.flush() == 0
        assert sample("sonic_gateway_provenance_buffer_events") == 1
        assert sample("sonic_gateway_provenance_written_events_total") == 3
        assert sample("sonic_gateway_provenance_flush_failures_total") == 1
    finally:
        recorder.buffer.clear()
        await recorder.stop()
        engine.dispose()
