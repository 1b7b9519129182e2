"""Active health (ServerReady, index, ModelReady, backoff) and the queue scraped from real Triton."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway
from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.routing.backend import Backend
from gateway.routing.health import HealthMonitor
from gateway.routing.probes import GrpcProber
from gateway.routing.queues import BackendQueues, parse_pending
from gateway.routing.registry import Registry
from tests.support.fake_triton import FakeTriton, Script
from tests.support.net import free_port


@pytest.fixture
async def fake() -> AsyncIterator[FakeTriton]:
    backend = FakeTriton("a", Script(models={"toy": ["1", "2"], "other": ["1"]}))
    await backend.start()
    yield backend
    await backend.stop()


async def test_model_ready_decides_which_listed_versions_are_served(fake: FakeTriton) -> None:
    backend = Backend(id="a", facility="a", grpc_address=fake.address)
    registry = Registry([backend])
    pool = GrpcBackendPool(1 << 20)
    monitor = HealthMonitor(registry, GrpcProber(pool), interval_s=10, timeout_s=2)
    try:
        fake.script.unready = {("toy", "2")}
        await monitor.probe(backend)
        assert registry.snapshot.health["a"].models == {"toy": {"1"}, "other": {"1"}}
        fake.script.unready = set()
        await monitor.probe(backend)
        assert registry.snapshot.health["a"].models["toy"] == {"1", "2"}
    finally:
        await pool.close()


async def test_dead_backends_are_probed_with_growing_backoff(fake: FakeTriton) -> None:
    dead = Backend(id="dead", facility="x", grpc_address=f"127.0.0.1:{free_port()}")
    alive = Backend(id="a", facility="a", grpc_address=fake.address)
    registry = Registry([dead, alive])
    pool = GrpcBackendPool(1 << 20)
    healthy: list[str] = []
    monitor = HealthMonitor(
        registry, GrpcProber(pool), 0.1, 0.5, max_backoff_s=1.0, on_healthy=healthy.append
    )
    try:
        waits = []
        for _ in range(4):
            await monitor.probe(dead)
            waits.append(monitor.next_probe_in("dead"))
        # 0.2, 0.4, 0.8, then capped at 1.0 (less half an interval, to land on the probe round).
        assert waits == pytest.approx([0.15, 0.35, 0.75, 0.95], abs=0.04)
        # probe_all skips it while it backs off, but still probes the healthy one.
        await monitor.probe_all()
        assert healthy == ["a"]
        assert not registry.snapshot.health["dead"].healthy
        await monitor.probe(alive)
        assert monitor.next_probe_in("a") == 0.0
    finally:
        await pool.close()


def test_pending_counts_are_parsed_per_model() -> None:
    text = (
        "# HELP nv_inference_pending_request_count Instantaneous number of pending requests\n"
        "# TYPE nv_inference_pending_request_count gauge\n"
        'nv_inference_pending_request_count{model="emtrack_michel",version="1"} 7\n'
        'nv_inference_pending_request_count{model="emtrack_michel",version="2"} 1\n'
        'nv_inference_pending_request_count{model="identity_fp32",version="1"} 0\n'
        'nv_inference_request_success{model="identity_fp32",version="1"} 12\n'
    )
    assert parse_pending(text) == {"emtrack_michel": 8, "identity_fp32": 0}


@pytest.mark.triton
async def test_queue_is_scraped_from_real_triton_and_fails_open(gateway: Gateway) -> None:
    lab = next(iter(gateway.registry.snapshot.backends.values()))
    await gateway.queues.scrape_all()
    # The real endpoint reports the metric for every loaded model (idle: zero queued).
    assert {"identity_fp32", "emtrack_michel"} <= gateway.queues.pending_by_model(lab.id).keys()
    assert gateway.queues.pending(lab.id) == 0
    # A backend whose metrics cannot be read counts as having no queue.
    unreadable = f"127.0.0.1:{free_port()}"
    registry = Registry([Backend(id="x", facility="x", grpc_address="h:1", metrics_address=unreadable)])
    queues = BackendQueues(registry, interval_s=10, timeout_s=0.5)
    await queues.start()
    try:
        assert queues.pending_by_model("x") == {}
    finally:
        await queues.stop()
