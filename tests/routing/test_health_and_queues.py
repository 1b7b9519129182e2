"""Active health (ServerReady, index, ModelReady, backoff) and the queue scraped from real Triton."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
import respx

from gateway.app import Gateway
from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.config import RoutingSettings
from gateway.errors import BackendUnreachable
from gateway.routing.backend import Backend
from gateway.routing.circuit import CircuitBreaker
from gateway.routing.health import HealthMonitor
from gateway.routing.probes import GrpcProber
from gateway.routing.queues import BackendQueues, parse_pending
from gateway.routing.registry import Registry
from gateway.state.memory import InMemoryState
from tests.support.clock import FakeClock
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
    clock = FakeClock()
    dead = Backend(id="dead", facility="x", grpc_address=f"127.0.0.1:{free_port()}")
    alive = Backend(id="a", facility="a", grpc_address=fake.address)
    registry = Registry([dead, alive])
    pool = GrpcBackendPool(1 << 20)
    healthy: list[str] = []
    monitor = HealthMonitor(
        registry, GrpcProber(pool), 1.0, 0.5, max_backoff_s=6.0, on_healthy=healthy.append, clock=clock
    )
    try:
        waits = []
        for _ in range(4):
            await monitor.probe(dead)
            waits.append(monitor.next_probe_in("dead"))
        # 2, 4, then capped at 6 (less half an interval, to land on the probe round).
        assert waits == [1.5, 3.5, 5.5, 5.5]
        # probe_all skips it while it backs off, but still probes the healthy one.
        await monitor.probe_all()
        assert healthy == ["a"]
        assert not registry.snapshot.health["dead"].healthy
        await monitor.probe(alive)
        assert monitor.next_probe_in("a") == 0.0
        clock.step(5.5)
        assert monitor.next_probe_in("dead") == 0.0
    finally:
        await pool.close()


class Facility:
    """A backend the test takes down and brings back: up, refusing connections (a probe fails at
    once), or hung (a probe fails when its timeout runs out)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.mode = "up"
        self.probes: list[float] = []  # when each ServerReady probe started
        self.passed: list[float] = []  # when each probe that found it up started

    async def server_ready(self, backend: Backend, timeout: float) -> bool:
        self.probes.append(self.clock())
        if self.mode == "refused":
            raise BackendUnreachable(f"backend {backend.id}: connection refused")
        if self.mode == "hung":
            await self.clock.sleep(timeout)
            raise TimeoutError
        self.passed.append(self.probes[-1])
        return True

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]:
        return {"emtrack_michel": frozenset({"1"})}


@pytest.mark.parametrize("down", ["refused", "hung"])
async def test_a_backend_that_comes_back_is_routed_to_within_5_s_of_being_ready(down: str) -> None:
    """Re-admission with the default settings, wherever in the probe cycle the backend comes back."""
    clock = FakeClock()
    routing = RoutingSettings()
    assert HealthMonitor(Registry(), Facility(clock), 2.0, 2.0).max_backoff_s == routing.health_max_backoff_s
    lab = Backend(id="lab", facility="lab", grpc_address="lab:8001")
    registry = Registry([lab])
    state = InMemoryState(clock=clock)
    breaker = CircuitBreaker(
        state,
        routing.circuit_failure_threshold,
        routing.circuit_base_ejection_s,
        routing.circuit_max_ejection_s,
        clock=clock,
    )
    facility = Facility(clock)
    monitor = HealthMonitor(
        registry,
        facility,
        routing.health_interval_s,
        routing.probe_timeout_s,
        max_backoff_s=routing.health_max_backoff_s,
        on_healthy=breaker.probe_succeeded,
        clock=clock,
        sleep=clock.sleep,
    )

    def routed_to() -> bool:
        return lab in registry.snapshot.candidates("emtrack_michel") and breaker.available("lab")

    await monitor.start()
    try:
        assert routed_to()
        delays: list[float] = []
        gaps: set[float] = set()
        offsets = [0.5 * i for i in range(8)]
        for offset in offsets:  # back at every point of the probe cycle
            # It dies under traffic: failed requests eject it, and its probes fail from now on.
            facility.mode = down
            for _ in range(routing.circuit_failure_threshold):
                breaker.failed("lab", "UNAVAILABLE")
            await clock.advance(120.0)  # two minutes down: any probe back-off has reached its cap
            assert not routed_to()
            # Ready ``offset`` seconds after the start of a failed probe (the one due 4 s after the last).
            await clock.advance(facility.probes[-1] + 4.0 + offset - clock())
            facility.mode = "up"
            ready_at = clock()
            await clock.advance(30.0)
            assert routed_to()
            back_at = min(t for t in facility.passed if t >= ready_at)
            delays.append(back_at - ready_at)
            down_probes = [t for t in facility.probes if ready_at - 100.0 < t < ready_at]
            gaps.update(b - a for a, b in itertools.pairwise(down_probes))
        assert max(delays) <= 5.0, delays
        assert delays == [4.0 - offset for offset in offsets]  # the next probe after it is back
        # While down, it was probed every 4 s, from the start of one probe to the next, even when
        # each probe hung for its whole timeout.
        assert gaps == {4.0}
    finally:
        await monitor.stop()


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


async def test_a_queue_reading_is_trusted_for_three_intervals_then_dropped() -> None:
    clock = FakeClock()
    registry = Registry([Backend(id="x", facility="x", grpc_address="h:1", metrics_address="m:9002")])
    queues = BackendQueues(registry, interval_s=1.0, timeout_s=0.5, clock=clock, sleep=clock.sleep)
    metrics = 'nv_inference_pending_request_count{model="emtrack_michel",version="1"} 7\n'
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get("http://m:9002/metrics").respond(text=metrics)
        await queues.start()
        try:
            assert queues.pending("x") == 7
            mock.get("http://m:9002/metrics").respond(500)  # from now on its metrics cannot be read
            await clock.advance(1.0)  # the next scrape
            assert queues.pending("x") == 0  # fail open: a scrape that failed drops the reading
        finally:
            await queues.stop()
    fresh = BackendQueues(registry, interval_s=1.0, clock=clock, sleep=clock.sleep)
    with respx.mock(assert_all_mocked=True) as mock:
        mock.get("http://m:9002/metrics").respond(text=metrics)
        await fresh.start()
        try:  # step(), not advance(): the clock moves, no further scrape runs
            clock.step(3.0)
            assert fresh.pending("x") == 7  # three intervals old: still trusted
            clock.step(0.001)
            assert fresh.pending("x") == 0  # older: dropped rather than trusted
        finally:
            await fresh.stop()


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
