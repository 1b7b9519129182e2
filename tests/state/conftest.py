"""Both SharedState implementations behind one fixture: every test here runs against each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from gateway.state import SharedState
from gateway.state.memory import InMemoryState
from gateway.state.redis import RedisState
from tests.support.clock import FakeClock
from tests.support.redis import delete_prefix, redis_url, unique_prefix


@dataclass
class StateKit:
    """``state`` is this process's view; ``peer()`` another process's (the same object in memory).

    ``clock`` is every view's local monotonic clock. Redis buckets and the ejections read back from
    Redis run on the Redis server's clock instead, which no test can stop: :meth:`expect` allows
    for the real time that passes around a round trip there, and nothing in memory.
    """

    kind: str
    state: SharedState
    peer: Callable[[], Awaitable[SharedState]]
    clock: FakeClock
    opened: list[SharedState] = field(default_factory=list)

    def expect(self, value: float) -> object:
        # At most a second of slack, and never so much that 0 (no wait, no ejection) would pass.
        return value if self.kind == "memory" else pytest.approx(value, abs=min(1.0, value / 2))

    async def settle(self) -> None:
        """Let every view see the others (a sync round in Redis; nothing to do in memory)."""
        for view in self.opened:
            if isinstance(view, RedisState):
                await view.sync()
        for view in self.opened:
            if isinstance(view, RedisState):
                await view.sync()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[StateKit]:
    clock = FakeClock()
    if request.param == "memory":
        memory = InMemoryState(clock=clock)

        async def same() -> SharedState:
            return memory

        kit = StateKit("memory", memory, same, clock, [memory])
        yield kit
        return
    url = redis_url()
    prefix = unique_prefix()
    opened: list[SharedState] = []

    async def open_view() -> SharedState:
        # A long interval: tests call settle() instead of waiting for the background loop.
        view = RedisState(url, prefix=prefix, sync_interval_s=30, ttl_s=60, clock=clock)
        await view.start()
        opened.append(view)
        return view

    first = await open_view()
    kit = StateKit("redis", first, open_view, clock, opened)
    try:
        yield kit
    finally:
        for view in opened:
            await view.close()
        await delete_prefix(url, prefix)
