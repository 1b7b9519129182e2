"""The shared background loop: runs on its interval, runs early when woken, stops cleanly."""

from __future__ import annotations

import asyncio

from gateway.core.periodic import Periodic


async def test_runs_every_interval_early_on_wake_and_not_after_stop() -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def action() -> None:
        runs.append(loop.time())

    periodic = Periodic(action, interval_s=0.05, name="t")
    periodic.start()
    await asyncio.sleep(0.18)
    assert 2 <= len(runs) <= 4
    slow = Periodic(action, interval_s=60, name="slow")
    slow.start()
    before = len(runs)
    slow.wake()
    await asyncio.sleep(0.01)
    assert len(runs) >= before + 1  # woken: ran without waiting a minute
    await periodic.stop()
    await slow.stop()
    after = len(runs)
    await asyncio.sleep(0.12)
    assert len(runs) == after
