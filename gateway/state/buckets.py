"""Token buckets, all-or-none across several buckets; the Redis Lua script mirrors this exactly.

A bucket may go into debt: a charge is granted when the bucket holds ``min(cost, burst)`` tokens,
then the full cost is taken. So a batch larger than the bucket still passes (when the bucket is
full) and the long-run rate stays exact, because the debt must be refilled before the next one.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.state.base import Charge

# (tokens, time of last update) per bucket key
Level = tuple[float, float]


def refill(level: Level | None, charge: Charge, now: float) -> float:
    if level is None:
        return charge.burst
    tokens, then = level
    return min(charge.burst, tokens + max(0.0, now - then) * charge.rate)


def take_all(levels: dict[str, Level], charges: Sequence[Charge], now: float) -> float:
    """Update ``levels`` in place; 0.0 when granted, else the wait until every bucket would grant."""
    current = [refill(levels.get(c.key), c, now) for c in charges]
    wait = 0.0
    for charge, tokens in zip(charges, current, strict=True):
        need = min(charge.cost, charge.burst)
        if tokens < need:
            wait = max(wait, (need - tokens) / charge.rate)
    if wait > 0.0:
        return wait
    for charge, tokens in zip(charges, current, strict=True):
        levels[charge.key] = (tokens - charge.cost, now)
    return 0.0
