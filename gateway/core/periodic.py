"""A background task that runs an action every interval (or sooner when woken), stopped cleanly.

Health probes, catalog refreshes and usage flushes all need exactly this; one implementation keeps
their cancellation and shutdown behaviour the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Periodic:
    def __init__(self, action: Callable[[], Awaitable[object]], interval_s: float, name: str) -> None:
        self.action = action
        self.interval_s = interval_s
        self.name = name
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Run the action now instead of at the end of the interval."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self.action()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
