"""What only the Redis implementation has to show: leases that die with their process, failing open."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from gateway.state import Charge
from gateway.state.redis import RedisState
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


async def test_unreachable_redis_fails_open_to_local_state() -> None:
    metrics = CollectorRegistry()
    state = RedisState(
        f"redis://127.0.0.1:{free_port()}/0", sync_interval_s=0.05, timeout_s=0.2, metrics_registry=metrics
    )
    await state.start()  # must not raise: the gateway serves without Redis
    try:
        state.acquire("a")
        assert state.in_flight("a") == 1
        state.eject("b", 5)
        assert state.ejected_until("b") > 0
        charge = Charge("subject:x:inferences", rate=1.0, burst=2.0, cost=1.0)
        # Rate limits loosen to per-process buckets; they do not vanish.
        assert [await state.take([charge]) for _ in range(3)][:2] == [0.0, 0.0]
        assert await state.take([charge]) > 0
        errors = "sonic_gateway_shared_state_errors_total"
        assert (metrics.get_sample_value(errors, {"operation": "sync"}) or 0) >= 1
        assert metrics.get_sample_value(errors, {"operation": "rate_limit"}) == 4
    finally:
        await state.close()
