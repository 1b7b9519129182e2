"""Refusals under load: counted, logged (rate-limited), never silent.

A flood may be refused, never dropped: every refusal is a retryable status (UNAVAILABLE / HTTP 503)
that ``sonic_gateway_refused_requests_total`` counts and a WARNING reports, at most one line per
reason every ``log_interval_s`` (with how many were refused since the last line), so a flood cannot
flood the logs too.

With the Envoy data plane, Envoy's circuit breakers do the refusing (its own requests to the Python
slow path, and to backends): :class:`EnvoyOverflowWatch` reads Envoy's overflow counters from its
loopback admin interface and turns their increase into the same counter and log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import httpx
from prometheus_client import CollectorRegistry, Counter

from gateway.core.periodic import Periodic, Sleep
from gateway.observability.registries import once_per_registry

log = logging.getLogger("gateway.overload")

# Envoy's counters of requests its circuit breakers refused (cluster.<name>.<counter>): over
# max_requests (HTTP/2 upstreams, e.g. the gRPC slow path) and over max_pending_requests (HTTP/1).
ENVOY_OVERFLOW_COUNTERS = ("upstream_rq_active_overflow", "upstream_rq_pending_overflow")


@once_per_registry
def refused_requests(registry: CollectorRegistry) -> Counter:
    return Counter(
        "sonic_gateway_refused_requests",
        "Requests refused with a retryable status (UNAVAILABLE / 503) because the gateway was at a "
        "concurrency limit; clients should retry with backoff",
        ["frontend", "reason"],
        registry=registry,
    )


class Refusals:
    """``refused(frontend, reason, n)``: count ``n`` refusals; WARNING at most once per interval per
    reason, saying how many since the last line."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        log_interval_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counter = refused_requests(registry)
        self.log_interval_s = log_interval_s
        self._clock = clock
        self._last_line: dict[tuple[str, str], float] = {}
        self._unlogged: dict[tuple[str, str], int] = {}

    def refused(self, frontend: str, reason: str, n: int = 1, detail: str = "") -> None:
        if n <= 0:
            return
        key = (frontend, reason)
        self.counter.labels(frontend, reason).inc(n)
        pending = self._unlogged.get(key, 0) + n
        now = self._clock()
        last = self._last_line.get(key)
        if last is not None and now - last < self.log_interval_s:
            self._unlogged[key] = pending
            return
        self._last_line[key] = now
        self._unlogged[key] = 0
        since = "" if last is None else f" in the last {now - last:.0f} s"
        log.warning(
            "overloaded: refused %d %s request(s)%s with a retryable status (%s)%s; "
            "clients should retry with backoff",
            pending, frontend, since, reason, f": {detail}" if detail else "",
        )  # fmt: skip


StatsSource = Callable[[], Awaitable[dict[str, int]]]


Counters = Callable[[str], Awaitable[dict[str, int]]]


def envoy_overflow_stats(counters: Counters) -> StatsSource:
    """Envoy's overflow counters, ``{"cluster.<name>.<counter>": value}``, from its admin port.

    ``counters(pattern)`` is the supervisor's stats reader: one kept-alive client for every poll (a
    new client per poll cost more than the poll itself, mostly building its TLS context).
    """

    async def read() -> dict[str, int]:
        found = await counters("overflow$")
        return {n: v for n, v in found.items() if n.rsplit(".", 1)[-1] in ENVOY_OVERFLOW_COUNTERS}

    return read


class EnvoyOverflowWatch:
    """Envoy's circuit-breaker refusals as ``sonic_gateway_refused_requests_total`` and a WARNING.

    ``slow_clusters`` maps the slow path's clusters to their frontend label (``grpc``/``http``), with
    the reason ``slow_path_overflow``; any other cluster (a model's) counts as frontend ``envoy``,
    reason ``backend_overflow`` (bounded labels either way).
    """

    def __init__(
        self,
        stats: StatsSource,
        refusals: Refusals,
        slow_clusters: dict[str, str],
        interval_s: float = 1.0,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.stats = stats
        self.refusals = refusals
        self.slow_clusters = slow_clusters  # cluster name -> frontend ("grpc" / "http")
        self._seen: dict[str, int] | None = None
        self._failing = False
        self._loop = Periodic(self.poll, interval_s, "envoy-overflow-watch", sleep=sleep)

    async def poll(self) -> None:
        try:
            now = await self.stats()
        except (httpx.HTTPError, ValueError) as exc:
            if not self._failing:
                log.info("cannot read Envoy's overflow counters (%s); will retry", exc)
            self._failing = True
            return
        self._failing = False
        seen, self._seen = self._seen, now
        if seen is None:
            seen = {}
        totals: dict[tuple[str, str], tuple[int, set[str]]] = {}
        for name, value in now.items():
            before = seen.get(name, 0)
            grown = value - before if value >= before else value  # Envoy restarted: counts anew
            if grown <= 0:
                continue
            cluster = name.removeprefix("cluster.").rsplit(".", 1)[0]
            frontend = self.slow_clusters.get(cluster)
            key = (frontend, "slow_path_overflow") if frontend else ("envoy", "backend_overflow")
            count, clusters = totals.get(key, (0, set()))
            clusters.add(cluster)
            totals[key] = (count + grown, clusters)
        for (frontend, reason), (count, clusters) in sorted(totals.items()):
            detail = f"Envoy's circuit breaker on {', '.join(sorted(clusters))} is full"
            self.refusals.refused(frontend, reason, count, detail)

    async def start(self) -> None:
        await self.poll()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self.poll()  # what happened since the last poll is still counted
