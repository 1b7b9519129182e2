"""Active health checks: each backend's readiness and the models it serves, on an interval.

Fail-closed for routing: a backend that does not answer a probe gets no traffic until it does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from gateway.core.periodic import Periodic
from gateway.errors import GatewayError
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)


class Prober(Protocol):
    async def server_ready(self, backend: Backend, timeout: float) -> bool: ...

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]: ...


class HealthMonitor:
    def __init__(self, registry: Registry, prober: Prober, interval_s: float, timeout_s: float) -> None:
        self.registry = registry
        self.prober = prober
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._loop = Periodic(self.probe_all, interval_s, "health-monitor")

    async def probe(self, backend: Backend) -> None:
        try:
            ready = await asyncio.wait_for(self.prober.server_ready(backend, self.timeout_s), self.timeout_s)
            models = (
                await asyncio.wait_for(self.prober.ready_models(backend, self.timeout_s), self.timeout_s)
                if ready
                else None
            )
        except (GatewayError, TimeoutError) as exc:
            was = self.registry.snapshot.health.get(backend.id)
            if was is not None and was.healthy:
                log.warning("backend %s failed its health check: %s", backend.id, exc)
            self.registry.update_health(backend.id, False, None, str(exc) or type(exc).__name__)
            return
        was = self.registry.snapshot.health.get(backend.id)
        if was is not None and not was.healthy and ready:
            log.info("backend %s is healthy, serving %s", backend.id, ", ".join(sorted(models or {})))
        self.registry.update_health(backend.id, ready, models, "" if ready else "server not ready")

    async def probe_all(self) -> None:
        backends = list(self.registry.snapshot.backends.values())
        await asyncio.gather(*(self.probe(b) for b in backends))

    async def start(self) -> None:
        await self.probe_all()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
