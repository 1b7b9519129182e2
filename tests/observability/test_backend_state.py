"""Backend health and ejection state as gauges, read from the router's snapshot at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.observability.backends import backend_state_collector
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry


def test_health_circuit_and_draining_make_a_backend_ejected() -> None:
    backends = [
        Backend(id="lab/a:1", facility="lab", grpc_address="a:1"),
        Backend(id="hpc/b:1", facility="hpc", grpc_address="b:1"),
        Backend(id="cloud/c:1", facility="cloud", grpc_address="c:1", draining=True, capacity=2),
    ]
    registry = Registry(backends)
    for b in backends:
        registry.update_health(b.id, True, {"m": frozenset({"1"})})
    open_circuits = {"hpc/b:1"}
    metrics = CollectorRegistry()
    backend_state_collector(metrics, registry, open_circuits.__contains__)
    backend_state_collector(metrics, registry, open_circuits.__contains__)  # a second gateway: no clash

    def gauge(name: str, backend: str) -> float | None:
        return metrics.get_sample_value(
            f"sonic_gateway_backend_{name}", {"backend": backend, "facility": backend.split("/")[0]}
        )

    assert [gauge("ejected", b.id) for b in backends] == [0, 1, 1]
    assert [gauge("circuit_open", b.id) for b in backends] == [0, 1, 0]
    assert [gauge("draining", b.id) for b in backends] == [0, 0, 1]
    assert gauge("capacity", "cloud/c:1") == 2
    assert gauge("models", "lab/a:1") == 1
    registry.mark_unreachable("lab/a:1", "connection refused")
    open_circuits.clear()
    assert [gauge("healthy", b.id) for b in backends] == [0, 1, 1]
    assert [gauge("ejected", b.id) for b in backends] == [1, 0, 1]
