"""A fake monotonic clock with an asyncio ``sleep`` that returns only when the test moves the clock.

Code that waits or expires takes a clock (and a sleep); tests pass this one, move it with
:meth:`FakeClock.advance`, and assert exact times instead of sleeping and asserting windows.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

# Loop turns that let woken tasks run until they wait again. A count, not a duration: how many turns
# a chain of awaits needs does not depend on how busy the machine is.
_SETTLE_TURNS = 50


async def settle() -> None:
    """Let every runnable task run until it waits on something (a sleep, an event, I/O)."""
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)


class FakeClock:
    """``clock()`` reads it; ``await clock.sleep(s)`` waits until it has been advanced by ``s``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []  # every duration asked of sleep(), in order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), wakeup))
        await wakeup

    def step(self, seconds: float) -> None:
        """Move the clock without running anything (for code that only reads it)."""
        self.now += seconds

    async def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds``; each sleeper wakes at its own deadline, in order, and runs."""
        end = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            deadline, _, wakeup = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            if not wakeup.done():  # a cancelled sleeper has gone
                wakeup.set_result(None)
                await settle()
        self.now = end
        await settle()
