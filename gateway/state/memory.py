"""In-process shared state: the embedded default when no Redis is configured (one process)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence

from gateway.state.base import Charge
from gateway.state.buckets import Level, take_all


class InMemoryState:
    """Load counters, circuit state and rate buckets of this process only.

    ``clock``: the monotonic clock of ejections and bucket refills (the circuit breaker reading
    :meth:`ejected_until` must use the same one).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._in_flight: defaultdict[str, int] = defaultdict(int)
        self._ejected: dict[str, float] = {}
        self._levels: dict[str, Level] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def in_flight(self, backend_id: str) -> int:
        return self._in_flight.get(backend_id, 0)

    def acquire(self, backend_id: str) -> None:
        self._in_flight[backend_id] += 1

    def release(self, backend_id: str) -> None:
        self._in_flight[backend_id] -= 1

    def eject(self, backend_id: str, duration_s: float) -> None:
        until = self._clock() + duration_s
        self._ejected[backend_id] = max(until, self._ejected.get(backend_id, 0.0))

    def ejected_until(self, backend_id: str) -> float:
        return self._ejected.get(backend_id, 0.0)

    async def take(self, charges: Sequence[Charge]) -> float:
        return take_all(self._levels, charges, self._clock())
