"""Load state shared by the router: in-process by default, Redis when ``redis_url`` is set."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from gateway.state.base import Charge, SharedState
from gateway.state.memory import InMemoryState

__all__ = ["Charge", "InMemoryState", "SharedState", "build_state"]


def build_state(
    redis_url: str | None,
    *,
    prefix: str = "{sonic}:",
    sync_interval_s: float = 0.1,
    metrics_registry: CollectorRegistry | None = None,
    backoff_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> SharedState:
    """``backoff_s``: how long Redis is left alone after it failed; ``clock``: monotonic, for tests."""
    if not redis_url:
        return InMemoryState(clock=clock)
    from gateway.state.redis import RedisState

    return RedisState(
        redis_url,
        prefix=prefix,
        sync_interval_s=sync_interval_s,
        metrics_registry=metrics_registry,
        backoff_s=backoff_s,
        clock=clock,
    )
