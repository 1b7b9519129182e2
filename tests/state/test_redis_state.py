"""What only the Redis implementation has to show: leases that die with their process, failing open."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from prometheus_client import CollectorRegistry

from gateway.state import Charge
from gateway.state.redis import RedisState
from tests.support.clock import FakeClock
from tests.support.net import free_port
from tests.support.redis import delete_prefix, redis_url, unique_prefix

_HOLDER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.state.redis import RedisState

    async def main():
        state = RedisState(sys.argv[1], prefix=sys.argv[2], sync_interval_s=0.1, ttl_s=0.5)
        await state.start()
        for _ in range(3):
            state.acquire("facility-a/triton:8001")  # three requests in flight, never released
        await state.sync()
        print("holding", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    value = unique_prefix()
    yield value
    await delete_prefix(redis_url(), value)


@pytest.mark.redis
async def test_counts_of_a_process_killed_mid_request_expire(prefix: str) -> None:
    url = redis_url()
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, url, prefix, stdout=asyncio.subprocess.PIPE, start_new_session=True
    )
    observer = RedisState(url, prefix=prefix, sync_interval_s=0.1, ttl_s=0.5)
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line.strip() == b"holding"
        await observer.start()
        await observer.sync()
        assert observer.in_flight("facility-a/triton:8001") == 3
        os.killpg(holder.pid, signal.SIGKILL)  # no release, no cleanup: only the lease can end it
        await asyncio.wait_for(holder.wait(), 10)
        for _ in range(30):
            await asyncio.sleep(0.1)
            if observer.in_flight("facility-a/triton:8001") == 0:
                break
        assert observer.in_flight("facility-a/triton:8001") == 0
    finally:
        if holder.returncode is None:
            os.killpg(holder.pid, signal.SIGKILL)
            await asyncio.wait_for(holder.wait(), 10)
        await observer.close()


class RedisHop:
    """A TCP hop in front of Redis that can hang like a stopped Redis server (SIGSTOP): it keeps
    accepting and reading, and never answers. Without an upstream it is hung from the start."""

    def __init__(self, upstream: tuple[str, int] | None = None) -> None:
        self.upstream = upstream
        self.hung = upstream is None
        self.swallowed = 0  # bytes that arrived while hung
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        upstream: asyncio.StreamWriter | None = None
        with contextlib.suppress(ConnectionError):
            if self.upstream is not None:
                from_redis, upstream = await asyncio.open_connection(*self.upstream)
                self._writers.append(upstream)
                pipe = asyncio.create_task(self._pipe(from_redis, writer))
                self._pipes.add(pipe)
                pipe.add_done_callback(self._pipes.discard)
            while data := await reader.read(65536):
                if self.hung or upstream is None:
                    self.swallowed += len(data)
                    continue
                upstream.write(data)
                await upstream.drain()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "gateway.state.redis" and r.levelname == "WARNING"
    ]


ERRORS = "sonic_gateway_shared_state_errors_total"


async def test_unreachable_redis_fails_open_to_local_state(caplog: pytest.LogCaptureFixture) -> None:
    metrics = CollectorRegistry()
    clock = FakeClock()
    state = RedisState(
        f"redis://127.0.0.1:{free_port()}/0",
        sync_interval_s=30,
        timeout_s=0.2,
        metrics_registry=metrics,
        clock=clock,
    )
    await state.start()  # must not raise: the gateway serves without Redis
    try:
        state.acquire("a")
        assert state.in_flight("a") == 1
        state.eject("b", 5)
        assert state.ejected_until("b") == clock() + 5
        charge = Charge("subject:x:inferences", rate=1.0, burst=2.0, cost=1.0)
        # Rate limits loosen to per-process buckets (on the same clock); they do not vanish.
        assert [await state.take([charge]) for _ in range(3)] == [0.0, 0.0, 1.0]
        assert await state.take([charge]) == 1.0
        assert metrics.get_sample_value(ERRORS, {"operation": "sync"}) == 1
        assert metrics.get_sample_value(ERRORS, {"operation": "rate_limit"}) == 4
        assert len(_warnings(caplog)) == 1
    finally:
        await state.close()


async def test_a_hung_redis_costs_one_timeout_per_backoff_not_one_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hop = RedisHop()  # accepts, never answers
    address = await hop.start()
    metrics = CollectorRegistry()
    clock = FakeClock()
    state = RedisState(
        f"redis://{address}/0",
        sync_interval_s=30,
        timeout_s=0.2,
        backoff_s=2.0,
        metrics_registry=metrics,
        clock=clock,
    )
    charge = Charge("subject:x:inferences", rate=1000.0, burst=1000.0, cost=1.0)
    try:
        await state.start()  # its first sync waits out one timeout
        tried = hop.swallowed
        assert tried > 0
        for _ in range(50):
            assert await state.take([charge]) == 0.0
        await state.sync()
        clock.step(1.999)
        await state.take([charge])
        assert hop.swallowed == tried  # nothing sent for 2 s: no request waited on Redis
        clock.step(0.001)
        await state.take([charge])  # the back-off is over: this one tries (and waits) again
        one_try = hop.swallowed - tried
        assert one_try > 0
        await state.take([charge])
        assert hop.swallowed == tried + one_try
        # After the next back-off, of ten requests at once only one tries; the others go on locally.
        clock.step(2.0)
        assert await asyncio.gather(*(state.take([charge]) for _ in range(10))) == [0.0] * 10
        assert hop.swallowed == tried + 2 * one_try
        assert metrics.get_sample_value(ERRORS, {"operation": "rate_limit"}) == 63  # every one local
        assert metrics.get_sample_value(ERRORS, {"operation": "sync"}) == 2
        assert len(_warnings(caplog)) == 1  # one warning per outage, not one per request
    finally:
        await state.close()
        await hop.close()


@pytest.mark.redis
async def test_redis_that_hangs_and_comes_back_is_used_again_after_the_backoff(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    real = urlsplit(redis_url())
    hop = RedisHop((real.hostname or "127.0.0.1", real.port or 6379))
    address = await hop.start()
    metrics = CollectorRegistry()
    clock = FakeClock()
    url = f"redis://{address}{real.path}"
    state = RedisState(
        url,
        prefix=prefix,
        sync_interval_s=30,
        timeout_s=0.2,
        backoff_s=2.0,
        metrics_registry=metrics,
        clock=clock,
    )
    peer = RedisState(redis_url(), prefix=prefix, sync_interval_s=30)
    charge = Charge("subject:x:inferences", rate=0.01, burst=3.0, cost=1.0)
    caplog.set_level(logging.INFO, logger="gateway.state.redis")
    try:
        await state.start()
        await peer.start()
        assert await peer.take([charge]) == 0.0  # the shared bucket: 2 tokens left
        hop.hung = True
        assert await state.take([charge]) == 0.0  # timed out: this process's own bucket (3 tokens)
        assert await state.take([charge]) == 0.0  # skipped: own bucket
        hop.hung = False
        clock.step(2.0)
        # Redis answers again: the shared bucket holds what the peer left, so 2 more, then a wait.
        assert [await state.take([charge]) == 0.0 for _ in range(3)] == [True, True, False]
        assert metrics.get_sample_value(ERRORS, {"operation": "rate_limit"}) == 2
        assert len(_warnings(caplog)) == 1
        assert "shared state in Redis works again" in caplog.messages
    finally:
        await peer.close()
        await state.close()
        await hop.close()
