"""Least-loaded choice and what the router does when nothing can serve."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.core.dataplane import DataPlane
from gateway.core.identity import AllowAllAuthenticator, AllowAllAuthorizer
from gateway.core.recording import InMemoryRecorder
from gateway.errors import ModelNotFound, Unavailable
from gateway.routing.backend import Backend
from gateway.routing.balancer import LoadSignal, choose_least_loaded
from gateway.routing.registry import Registry
from gateway.state.memory import InMemoryState


def _backend(name: str, capacity: float = 1.0, draining: bool = False) -> Backend:
    return Backend(id=name, facility=name, grpc_address=f"{name}:1", capacity=capacity, draining=draining)


def test_picks_smallest_in_flight_per_capacity() -> None:
    load = InMemoryState()
    small, big = _backend("small", 1), _backend("big", 4)
    for _ in range(2):
        load.acquire("small")
    for _ in range(4):
        load.acquire("big")
    # 2/1 = 2.0 for small, 4/4 = 1.0 for big
    assert choose_least_loaded([small, big], load) is big


def test_ties_are_broken_at_random() -> None:
    load = InMemoryState()
    backends = [_backend(n) for n in "abc"]
    rng = random.Random(7)
    picks = Counter(choose_least_loaded(backends, load, rng).id for _ in range(600))
    assert set(picks) == {"a", "b", "c"}
    assert min(picks.values()) > 120  # each near 200: no backend is favoured by position


def _plane(registry: Registry) -> DataPlane:
    return DataPlane(
        AllowAllAuthenticator(), AllowAllAuthorizer(), registry, InMemoryState(), InMemoryRecorder()
    )


def test_route_respects_health_version_and_draining() -> None:
    registry = Registry([_backend("a"), _backend("b"), _backend("c", draining=True)])
    registry.update_health("a", True, {"m": frozenset({"1"})})
    registry.update_health("b", True, {"m": frozenset({"1", "2"})})
    registry.update_health("c", True, {"m": frozenset({"2"})})
    plane = _plane(registry)
    assert plane.route("m", "2").id == "b"
    assert {plane.route("m").id for _ in range(50)} == {"a", "b"}
    registry.mark_unreachable("b", "connection refused")
    with pytest.raises(Unavailable, match="'m' version '2' is registered but no healthy backend"):
        plane.route("m", "2")


def test_unknown_model_and_version_are_not_found_with_the_known_models() -> None:
    registry = Registry([_backend("a")])
    registry.update_health("a", True, {"m": frozenset({"1"})})
    plane = _plane(registry)
    with pytest.raises(ModelNotFound, match=r"model 'other' is not served .*models available: m"):
        plane.route("other")
    with pytest.raises(ModelNotFound, match="'m' version '9'"):
        plane.route("m", "9")


def test_registry_replacement_keeps_health_of_kept_backends() -> None:
    registry = Registry([_backend("a")])
    registry.update_health("a", True, {"m": frozenset({"1"})})
    registry.set_backends([_backend("a"), _backend("new")])
    assert [b.id for b in registry.snapshot.candidates("m")] == ["a"]
    assert not registry.snapshot.health["new"].healthy


def test_http_routing_skips_backends_without_an_http_endpoint() -> None:
    grpc_only = _backend("grpc-only")
    both = Backend(id="both", facility="both", grpc_address="both:1", http_address="both:2")
    registry = Registry([grpc_only, both])
    for backend_id in ("grpc-only", "both"):
        registry.update_health(backend_id, True, {"m": frozenset({"1"})})
    registry.update_health("both", True, {"m": frozenset({"1"}), "n": frozenset({"1"})})
    registry.update_health("grpc-only", True, {"m": frozenset({"1"}), "g": frozenset({"1"})})
    plane = _plane(registry)
    assert {plane.route("m", protocol="http").id for _ in range(30)} == {"both"}
    assert {plane.route("m").id for _ in range(30)} == {"both", "grpc-only"}
    with pytest.raises(Unavailable, match="only by facilities without an HTTP endpoint"):
        plane.check_servable("g", protocol="http")
    assert [e.name for e in plane.repository_index("http") if e.ready] == ["m", "n"]


class _Queues:
    def __init__(self, pending: dict[str, int]) -> None:
        self._pending = pending

    def pending(self, backend_id: str) -> int:
        return self._pending.get(backend_id, 0)


def test_signal_adds_only_the_queue_the_gateways_did_not_send() -> None:
    load = InMemoryState()
    for _ in range(3):
        load.acquire("a")
    signal = LoadSignal(load, _Queues({"a": 2, "b": 5}))
    # a: 3 in flight from the gateways, 2 queued (ours, at most): the queue adds nothing.
    assert signal(_backend("a")) == 3.0
    # b: nothing from the gateways but 5 queued by someone else: busy.
    assert signal(_backend("b", capacity=2)) == 2.5
    assert choose_least_loaded([_backend("a"), _backend("b")], signal).id == "a"


def test_power_of_two_choices_among_many_never_picks_the_most_loaded() -> None:
    load = InMemoryState()
    backends = [_backend(f"b{i}") for i in range(8)]
    for i, backend in enumerate(backends):
        for _ in range(i):
            load.acquire(backend.id)
    rng = random.Random(3)
    picks = Counter(choose_least_loaded(backends, load, rng).id for _ in range(4000))
    assert "b7" not in picks
    # Two sampled of eight: the least loaded wins whenever it is sampled (2/8 of the time), not always.
    assert 800 < picks["b0"] < 1200
    assert picks["b0"] > picks["b3"] > picks["b6"] > 0


def test_ejected_backends_are_not_routed_to() -> None:
    registry = Registry([_backend("a"), _backend("b")])
    for name in "ab":
        registry.update_health(name, True, {"m": frozenset({"1"})})
    plane = _plane(registry)
    plane.load.eject("a", 30)
    assert {plane.route("m").id for _ in range(20)} == {"b"}
    plane.load.eject("b", 30)
    with pytest.raises(Unavailable, match="no healthy backend"):
        plane.route("m")
