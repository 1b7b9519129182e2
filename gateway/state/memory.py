"""In-process load counters: the embedded default when no Redis is configured."""

from __future__ import annotations

from collections import defaultdict


class InMemoryLoadState:
    """Requests in flight per backend, counted by this process only."""

    def __init__(self) -> None:
        self._in_flight: defaultdict[str, int] = defaultdict(int)

    def in_flight(self, backend_id: str) -> int:
        return self._in_flight[backend_id]

    def acquire(self, backend_id: str) -> None:
        self._in_flight[backend_id] += 1

    def release(self, backend_id: str) -> None:
        self._in_flight[backend_id] -= 1
