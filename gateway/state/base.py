"""The one interface for state the gateway processes share: load counters, circuits, rate buckets.

Two implementations run the same tests: :class:`~gateway.state.memory.InMemoryState` (the default,
one process) and :class:`~gateway.state.redis.RedisState` (``redis_url`` set: every process and
replica sees the others). The routing decision itself never waits on the network: ``in_flight`` and
``ejected_until`` read local memory, refreshed by a background sync; only ``take`` (rate limits) is
a round trip, because a limit must be atomic across processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Charge:
    """Take ``cost`` tokens from the bucket ``key`` (size ``burst``, refilled at ``rate`` per second)."""

    key: str
    rate: float
    burst: float
    cost: float


class SharedState(Protocol):
    async def start(self) -> None:
        """Open connections and start the background sync (if any)."""
        ...

    async def close(self) -> None:
        """Stop the sync and withdraw this process's counts."""
        ...

    # -- load: requests in flight per backend, from every process --------------------------------
    def acquire(self, backend_id: str) -> None: ...

    def release(self, backend_id: str) -> None: ...

    def in_flight(self, backend_id: str) -> int:
        """This process's count (exact) plus the other processes' (as of the last sync)."""
        ...

    # -- circuit state: a backend ejected by any process is ejected for all ----------------------
    def eject(self, backend_id: str, duration_s: float) -> None: ...

    def ejected_until(self, backend_id: str) -> float:
        """Monotonic time (the state's clock) until which ``backend_id`` is ejected (0.0: not ejected)."""
        ...

    # -- rate-limit buckets --------------------------------------------------------------------------
    async def take(self, charges: Sequence[Charge]) -> float:
        """Take every charge, all or none; 0.0 when granted, else seconds until it would be."""
        ...
