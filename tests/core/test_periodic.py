"""The shared background loop: runs on its interval, runs early when woken, stops cleanly."""

from __future__ import annotations

import asyncio

import pytest

from gateway.core.periodic import Periodic
from tests.support.clock import FakeClock


async def test_runs_every_interval_early_on_wake_and_not_after_stop() -> None:
    clock = FakeClock(100.0)
    runs: list[float] = []

    async def action() -> None:
        runs.append(clock())

    periodic = Periodic(action, interval_s=5.0, name="t", sleep=clock.sleep)
    periodic.start()
    await clock.advance(4.5)
    assert runs == []
    await clock.advance(11.0)  # to 115.5
    assert runs == [105.0, 110.0, 115.0]
    periodic.wake()
    await clock.advance(0.0)
    assert runs == [105.0, 110.0, 115.0, 115.5]  # woken: ran at once
    await clock.advance(5.0)
    assert runs[-1] == 120.5  # and the next interval counts from that run
    await periodic.stop()
    await clock.advance(60.0)
    assert runs == [105.0, 110.0, 115.0, 115.5, 120.5]
    assert set(clock.sleeps) == {5.0}


async def test_a_wake_during_the_action_runs_it_once_more_right_after() -> None:
    clock = FakeClock(0.0)
    runs: list[float] = []
    periodic: Periodic

    async def action() -> None:
        runs.append(clock())
        if len(runs) == 1:
            periodic.wake()  # e.g. a catalog change arriving while a refresh runs

    periodic = Periodic(action, interval_s=10.0, name="t", sleep=clock.sleep)
    periodic.start()
    await clock.advance(10.0)
    assert runs == [10.0, 10.0]
    await clock.advance(10.0)
    assert runs == [10.0, 10.0, 20.0]
    await periodic.stop()


async def test_an_action_that_fails_stops_the_loop_and_stop_raises_it() -> None:
    clock = FakeClock(0.0)

    async def action() -> None:
        raise RuntimeError("refresh broke")

    periodic = Periodic(action, interval_s=1.0, name="t", sleep=clock.sleep)
    periodic.start()
    await clock.advance(1.0)
    with pytest.raises(RuntimeError, match="refresh broke"):
        await periodic.stop()


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
