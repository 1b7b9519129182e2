"""Real Redis for tests: the URL from ``SONIC_TEST_REDIS_URL`` and a key prefix no other test uses."""

from __future__ import annotations

import os
import uuid

import pytest


def redis_url() -> str:
    url = os.environ.get("SONIC_TEST_REDIS_URL")
    if not url:
        pytest.skip("needs Redis: set SONIC_TEST_REDIS_URL=redis://127.0.0.1:6379/0 to run it")
    return url


def unique_prefix() -> str:
    # The hash tag keeps every key of one gateway in one cluster slot (as the default prefix does).
    return f"{{sonic-test-{uuid.uuid4().hex[:12]}}}:"


async def delete_prefix(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix.replace("{", "[{]") + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
