"""The circuit breaker's states: closed, open for a growing interval, half-open with one trial."""

from __future__ import annotations

import time

from gateway.routing.circuit import CircuitBreaker
from gateway.state.memory import InMemoryState


def _wait_out(breaker: CircuitBreaker, backend_id: str) -> None:
    left = breaker.state.ejected_until(backend_id) - time.monotonic()
    if left > 0:
        time.sleep(left + 0.005)


def test_consecutive_failures_eject_and_a_success_in_between_resets_the_count() -> None:
    breaker = CircuitBreaker(InMemoryState(), failure_threshold=3, base_s=0.05, max_s=1)
    breaker.failed("a", "refused")
    breaker.failed("a", "refused")
    breaker.succeeded("a")
    breaker.failed("a", "refused")
    breaker.failed("a", "refused")
    assert breaker.available("a")
    breaker.failed("a", "refused")
    assert not breaker.available("a")
    assert breaker.available("b")


def test_ejection_grows_exponentially_up_to_the_cap_and_half_open_allows_one_trial() -> None:
    state = InMemoryState()
    breaker = CircuitBreaker(state, failure_threshold=1, base_s=0.02, max_s=0.07)
    lengths = []
    for _ in range(4):
        start = time.monotonic()
        breaker.failed("a", "UNAVAILABLE")
        lengths.append(state.ejected_until("a") - start)
        _wait_out(breaker, "a")
        # Half-open: one trial at a time.
        assert breaker.available("a")
        breaker.dispatched("a")
        assert not breaker.available("a")
    assert [round(x, 2) for x in lengths] == [0.02, 0.04, 0.07, 0.07]
    breaker.succeeded("a")  # the trial answered: closed, interval reset
    assert breaker.available("a")
    breaker.failed("a", "UNAVAILABLE")
    assert state.ejected_until("a") - time.monotonic() <= 0.02


def test_a_trial_that_ends_without_an_answer_frees_the_slot_for_another() -> None:
    breaker = CircuitBreaker(InMemoryState(), failure_threshold=1, base_s=0.01)
    breaker.failed("a", "refused")
    _wait_out(breaker, "a")
    breaker.dispatched("a")
    breaker.finished("a")  # cancelled by the client
    assert breaker.available("a")


def test_a_health_probe_closes_the_circuit_only_after_the_ejection() -> None:
    state = InMemoryState()
    breaker = CircuitBreaker(state, failure_threshold=1, base_s=0.05)
    breaker.failed("a", "refused")
    breaker.probe_succeeded("a")  # too early: the ejection stands
    assert breaker.ejected("a")
    _wait_out(breaker, "a")
    breaker.probe_succeeded("a")
    breaker.failed("a", "refused")  # closed again, so this is a first ejection: base length
    assert state.ejected_until("a") - time.monotonic() <= 0.05
