"""A background task that runs an action every interval (or sooner when woken), stopped cleanly.

Health probes, catalog refreshes and usage flushes all need exactly this; one implementation keeps
their cancellation and shutdown behaviour the same. The pause between runs is an injected ``sleep``
(``asyncio.sleep`` by default), so tests move a fake clock instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Sleep = Callable[[float], Awaitable[object]]


class Periodic:
    def __init__(
        self,
        action: Callable[[], Awaitable[object]],
        interval_s: float,
        name: str,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.action = action
        self.interval_s = interval_s
        self.name = name
        self._sleep = sleep
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Run the action now instead of at the end of the interval."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def _pause(self) -> None:
        """One interval, or less when woken."""
        if self._wake.is_set():
            return
        # asyncio.wait, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives
        # just as the event is set (wake() right before stop()), and stop() would hang.
        waiters = {
            asyncio.ensure_future(self._sleep(self.interval_s)),
            asyncio.ensure_future(self._wake.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.wait(waiters)

    async def _run(self) -> None:
        while True:
            await self._pause()
            self._wake.clear()
            await self.action()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait, not ``await task`` under suppress(CancelledError): that would also swallow a
        # cancellation of the caller of stop().
        await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error
