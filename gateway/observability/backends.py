"""Each backend's health and ejection state, read from the registry's snapshot at scrape time.

A custom collector (no bookkeeping on the hot path). Under ``--workers N`` every worker probes every
backend itself, so the worker that answers a scrape reports what it routes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from gateway import __version__
from gateway.observability.registries import once_per_registry
from gateway.routing.registry import Registry

_LABELS = ["facility", "backend"]


Ejected = Callable[[str], bool]


def _never(backend_id: str) -> bool:
    return False


class BackendStateCollector(Collector):
    """``circuit_open(backend_id)``: the circuit breaker's ejection (passive health), if any."""

    def __init__(self, registry: Registry, circuit_open: Ejected = _never) -> None:
        self.registry = registry
        self.circuit_open = circuit_open

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        snapshot = self.registry.snapshot
        healthy = GaugeMetricFamily(
            "sonic_gateway_backend_healthy", "1 if the backend passed its last health check", labels=_LABELS
        )
        ejected = GaugeMetricFamily(
            "sonic_gateway_backend_ejected",
            "1 if the backend gets no traffic now (unhealthy, unreachable, circuit open or draining)",
            labels=_LABELS,
        )
        draining = GaugeMetricFamily(
            "sonic_gateway_backend_draining", "1 if an admin is draining the backend", labels=_LABELS
        )
        circuit = GaugeMetricFamily(
            "sonic_gateway_backend_circuit_open",
            "1 if the circuit breaker has ejected the backend after failed requests",
            labels=_LABELS,
        )
        capacity = GaugeMetricFamily(
            "sonic_gateway_backend_capacity", "Relative capacity used to weigh load", labels=_LABELS
        )
        models = GaugeMetricFamily(
            "sonic_gateway_backend_models", "Models the backend reported ready", labels=_LABELS
        )
        last_seen = GaugeMetricFamily(
            "sonic_gateway_backend_last_healthy_timestamp_seconds",
            "When the backend last passed a health check (0: never)",
            labels=_LABELS,
        )
        for backend_id, backend in sorted(snapshot.backends.items()):
            state = snapshot.health[backend_id]
            labels = [backend.facility, backend_id]
            is_open = self.circuit_open(backend_id)
            healthy.add_metric(labels, 1.0 if state.healthy else 0.0)
            ejected.add_metric(labels, 0.0 if state.healthy and not backend.draining and not is_open else 1.0)
            circuit.add_metric(labels, 1.0 if is_open else 0.0)
            draining.add_metric(labels, 1.0 if backend.draining else 0.0)
            capacity.add_metric(labels, backend.capacity)
            models.add_metric(labels, float(len(state.models)))
            last_seen.add_metric(labels, state.last_seen)
        yield healthy
        yield ejected
        yield draining
        yield circuit
        yield capacity
        yield models
        yield last_seen
        info = InfoMetricFamily("sonic_gateway_build", "The gateway's version")
        info.add_metric([], {"version": __version__})
        yield info


@once_per_registry
def _registered(metrics: CollectorRegistry) -> BackendStateCollector:
    collector = BackendStateCollector(Registry())  # the gateway hands in its registry below
    metrics.register(collector)
    return collector


def backend_state_collector(
    metrics: CollectorRegistry, registry: Registry, circuit_open: Ejected = _never
) -> BackendStateCollector:
    """Registered once per metrics registry; a later gateway in the same process takes it over."""
    collector = _registered(metrics)
    collector.registry = registry
    collector.circuit_open = circuit_open
    return collector
