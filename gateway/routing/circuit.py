"""Passive health: a circuit breaker per backend, fed by the answers real requests get.

Closed: requests flow; ``failure_threshold`` consecutive failures (connection failures, UNAVAILABLE
answers) open it. Open: the backend is ejected for ``base_s * 2**(n-1)`` seconds (n: ejections in
a row, capped at ``max_s``), for every gateway process (the ejection lives in the shared state).
Half-open, once that time is over: one trial request at a time goes through; its success (or a
successful active health probe) closes the circuit and resets the interval, its failure opens it
again for twice as long. Any answer from the backend that is not UNAVAILABLE counts as success: a
backend that says "bad input" is up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.state.base import SharedState

log = logging.getLogger(__name__)


@dataclass
class _Circuit:
    failures: int = 0  # consecutive, while closed
    ejections: int = 0  # in a row; > 0 means open or half-open
    trial: bool = False  # a half-open trial request is in flight


class CircuitBreaker:
    def __init__(
        self,
        state: SharedState,
        failure_threshold: int = 3,
        base_s: float = 1.0,
        max_s: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` must be the one ``state`` measures ejections with (both monotonic by default)."""
        self.state = state
        self._clock = clock
        self.failure_threshold = failure_threshold
        self.base_s = base_s
        self.max_s = max_s
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, backend_id: str) -> _Circuit:
        circuit = self._circuits.get(backend_id)
        if circuit is None:
            circuit = self._circuits[backend_id] = _Circuit()
        return circuit

    def available(self, backend_id: str) -> bool:
        """May a request go to ``backend_id`` now? (No side effect: see :meth:`dispatched`.)"""
        if self.state.ejected_until(backend_id) > self._clock():
            return False
        circuit = self._circuits.get(backend_id)
        return circuit is None or not (circuit.ejections and circuit.trial)

    def dispatched(self, backend_id: str) -> None:
        """A request is on its way; when the circuit is half-open, it is the trial."""
        circuit = self._circuits.get(backend_id)
        if circuit is not None and circuit.ejections:
            circuit.trial = True

    def succeeded(self, backend_id: str) -> None:
        circuit = self._circuits.get(backend_id)
        if circuit is None:
            return
        if circuit.ejections:
            log.info("backend %s answered its trial request: back in service", backend_id)
        circuit.failures = circuit.ejections = 0
        circuit.trial = False

    def finished(self, backend_id: str) -> None:
        """The request ended without telling anything about the backend (cancelled, deadline)."""
        circuit = self._circuits.get(backend_id)
        if circuit is not None:
            circuit.trial = False

    def failed(self, backend_id: str, reason: str) -> None:
        circuit = self._get(backend_id)
        circuit.trial = False
        circuit.failures += 1
        if circuit.ejections == 0 and circuit.failures < self.failure_threshold:
            return
        circuit.ejections += 1
        circuit.failures = 0
        duration = min(self.max_s, self.base_s * 2 ** (circuit.ejections - 1))
        self.state.eject(backend_id, duration)
        log.warning("backend %s ejected for %.1f s: %s", backend_id, duration, reason)

    def probe_succeeded(self, backend_id: str) -> None:
        """An active health probe answered: it is the half-open trial once the ejection is over."""
        circuit = self._circuits.get(backend_id)
        if circuit is None or not circuit.ejections:
            return
        if self.state.ejected_until(backend_id) <= self._clock():
            log.info("backend %s passed its health probe after ejection: back in service", backend_id)
            circuit.ejections = circuit.failures = 0
            circuit.trial = False

    def ejected(self, backend_id: str) -> bool:
        return self.state.ejected_until(backend_id) > self._clock()
