"""The circuit breaker's states: closed, open for a growing interval, half-open with one trial."""

from __future__ import annotations

from gateway.routing.circuit import CircuitBreaker
from gateway.state.memory import InMemoryState
from tests.support.clock import FakeClock


def _breaker(
    clock: FakeClock, failure_threshold: int, base_s: float, max_s: float = 60.0
) -> tuple[CircuitBreaker, InMemoryState]:
    state = InMemoryState(clock=clock)
    return CircuitBreaker(state, failure_threshold, base_s, max_s, clock=clock), state


def test_consecutive_failures_eject_and_a_success_in_between_resets_the_count() -> None:
    clock = FakeClock()
    breaker, _ = _breaker(clock, failure_threshold=3, base_s=1.0, max_s=10.0)
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
    clock = FakeClock(1000.0)
    breaker, state = _breaker(clock, failure_threshold=1, base_s=2.0, max_s=7.0)
    lengths = []
    for _ in range(4):
        breaker.failed("a", "UNAVAILABLE")
        lengths.append(state.ejected_until("a") - clock())
        clock.step(lengths[-1] - 0.5)
        assert not breaker.available("a")  # still ejected half a second before the end
        clock.step(0.5)
        # Half-open: one trial at a time.
        assert breaker.available("a")
        breaker.dispatched("a")
        assert not breaker.available("a")
    assert lengths == [2.0, 4.0, 7.0, 7.0]
    breaker.succeeded("a")  # the trial answered: closed, interval reset
    assert breaker.available("a")
    breaker.failed("a", "UNAVAILABLE")
    assert state.ejected_until("a") == clock() + 2.0


def test_a_trial_that_ends_without_an_answer_frees_the_slot_for_another() -> None:
    clock = FakeClock()
    breaker, _ = _breaker(clock, failure_threshold=1, base_s=1.0)
    breaker.failed("a", "refused")
    clock.step(1.0)
    breaker.dispatched("a")
    breaker.finished("a")  # cancelled by the client
    assert breaker.available("a")


def test_a_health_probe_closes_the_circuit_only_after_the_ejection() -> None:
    clock = FakeClock(1000.0)
    breaker, state = _breaker(clock, failure_threshold=1, base_s=4.0)
    breaker.failed("a", "refused")
    breaker.failed("a", "refused")  # the half-open trial failed too: 8 s now
    assert state.ejected_until("a") == 1008.0
    clock.step(7.0)
    breaker.probe_succeeded("a")  # too early: the ejection stands
    assert breaker.ejected("a")
    clock.step(1.0)
    assert not breaker.ejected("a")
    breaker.probe_succeeded("a")
    breaker.failed("a", "refused")  # closed again, so this is a first ejection: base length
    assert state.ejected_until("a") == 1008.0 + 4.0
