"""Pushes the catalog's routable backends to the router's registry: on change, never per inference.

Admin writes call :meth:`CatalogSync.refresh_blocking` right after their commit; a periodic task picks
up changes other replicas made. The registry's snapshot is replaced only when the set changed, and only
from the event loop's thread (the health monitor writes it there too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import anyio.from_thread
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.catalog import models as m
from gateway.core.periodic import Periodic
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)


def routable_backends(engine: Engine) -> list[Backend]:
    """Enabled gRPC backends of enabled facilities, as the router sees them (ordered by catalog id)."""
    with Session(engine) as session:
        rows = session.execute(
            select(m.Backend, m.Facility.name)
            .join(m.Facility, m.Backend.facility_id == m.Facility.id)
            .where(m.Backend.enabled.is_(True), m.Facility.enabled.is_(True), m.Backend.protocol == "grpc")
            .order_by(m.Backend.id)
        ).all()
    return [
        Backend(
            id=Backend.make_id(facility, b.address),
            facility=facility,
            grpc_address=b.address,
            http_address=b.http_address,
            metrics_address=b.metrics_address,
            capacity=b.capacity,
            draining=b.draining,
        )
        for b, facility in rows
    ]


class CatalogSync:
    def __init__(self, registry: Registry, static: Sequence[Backend], interval_s: float = 5.0) -> None:
        self.registry = registry
        self.static = list(static)
        self.interval_s = interval_s
        self.engine: Engine | None = None
        self.current: tuple[Backend, ...] | None = None
        self._loop = Periodic(self.refresh, interval_s, "catalog-sync")
        self._failing = False

    def apply(self, catalog: Sequence[Backend]) -> bool:
        """Publish static + catalog backends if the catalog's set changed; static ones win on id clashes."""
        new = tuple(catalog)
        if new == self.current:
            return False
        self.current = new
        static_ids = {b.id for b in self.static}
        merged = self.static + [b for b in new if b.id not in static_ids]
        self.registry.set_backends(merged)
        log.info("router backends: %d static, %d from the catalog", len(self.static), len(new))
        return True

    async def refresh(self) -> bool:
        if self.engine is None:
            return False
        try:
            backends = await asyncio.to_thread(routable_backends, self.engine)
        except Exception as exc:
            if not self._failing:
                log.warning("catalog backends not read (is the database migrated?): %s", exc)
            self._failing = True
            return False
        self._failing = False
        return self.apply(backends)

    def refresh_blocking(self) -> None:
        """From a worker thread of the event loop (a sync endpoint): read here, publish on the loop."""
        if self.engine is None:
            return
        backends = routable_backends(self.engine)
        try:
            anyio.from_thread.run_sync(self.apply, backends)
        except RuntimeError:  # not in an anyio worker thread: no loop to hand over to
            self.apply(backends)

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        await self.refresh()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
