"""Token buckets on inferences/s and bytes/s, per subject and per group, enforced by the DataPlane.

Buckets live in the shared state, so with Redis a limit holds across every gateway process and
replica (one atomic Lua script per request); without Redis it holds per process. A refused request
gets :class:`~gateway.errors.ResourceExhausted` (gRPC RESOURCE_EXHAUSTED with ``retry-after``
trailing metadata, HTTP 429 with ``Retry-After``) carrying the wait until every bucket has room.
"""

from __future__ import annotations

from gateway.config import LimitSettings, RateSettings
from gateway.core.identity import Principal
from gateway.errors import ResourceExhausted
from gateway.state.base import Charge, SharedState


def _charges(owner: str, rates: RateSettings, inferences: int, nbytes: int) -> list[Charge]:
    out = []
    if rates.inferences_per_s is not None:
        rate = rates.inferences_per_s
        out.append(Charge(f"{owner}:inferences", rate, rate * rates.burst_s, float(inferences)))
    if rates.bytes_per_s is not None:
        rate = rates.bytes_per_s
        out.append(Charge(f"{owner}:bytes", rate, rate * rates.burst_s, float(nbytes)))
    return out


class RateLimiter:
    def __init__(self, settings: LimitSettings, state: SharedState) -> None:
        self.settings = settings
        self.state = state
        self.enabled = bool(
            settings.groups
            or settings.subjects
            or settings.default.inferences_per_s is not None
            or settings.default.bytes_per_s is not None
        )

    def charges(self, principal: Principal, inferences: int, nbytes: int) -> list[Charge]:
        inferences = max(1, inferences)  # a request whose batch size is unknown still counts
        rates = self.settings.subjects.get(principal.subject, self.settings.default)
        out = _charges(f"subject:{principal.issuer}|{principal.subject}", rates, inferences, nbytes)
        for group in sorted(principal.groups & self.settings.groups.keys()):
            out += _charges(f"group:{group}", self.settings.groups[group], inferences, nbytes)
        return out

    async def admit(self, principal: Principal, inferences: int, nbytes: int) -> None:
        """Charge the caller's buckets, or raise ResourceExhausted with the wait."""
        if not self.enabled:
            return
        charges = self.charges(principal, inferences, nbytes)
        if not charges:
            return
        wait = await self.state.take(charges)
        if wait > 0:
            groups = sorted(principal.groups & self.settings.groups.keys())
            whose = f"subject {principal.subject!r}" + (f" and groups {groups}" if groups else "")
            raise ResourceExhausted(
                f"rate limit reached for {whose} ({inferences} inferences, {nbytes} bytes in this "
                f"request); retry in {wait:.2f} s, or ask a gateway admin for a higher limit",
                retry_after_s=wait,
            )
