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


async def test_stop_right_after_wake_always_returns() -> None:
    """wake() immediately followed by stop() must not lose the cancellation (a 3.11 wait_for race)."""

    async def action() -> None:
        await asyncio.sleep(0)

    for _ in range(20):
        periodic = Periodic(action, interval_s=60, name="race")
        periodic.start()
        await asyncio.sleep(0)  # let the loop reach its wait
        periodic.wake()
        stopping = asyncio.ensure_future(periodic.stop())
        done, _ = await asyncio.wait({stopping}, timeout=2)
        assert done, "stop() hung after wake(): the loop lost its cancellation"
