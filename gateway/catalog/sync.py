"""Pushes the catalog's routable backends to the router's registry, and each model's allowed groups to
the policy: on change, never per inference.

Admin writes call :meth:`CatalogSync.refresh_blocking` right after their commit; a periodic task picks
up changes other replicas made. The registry's snapshot is replaced only when the set changed, and only
from the event loop's thread (the health monitor writes it there too). The policy gets a new lookup
only when some model's groups changed; the lookup itself is a dict read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import anyio.from_thread
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.catalog import models as m
from gateway.catalog.db import why_unreadable
from gateway.core.periodic import Periodic
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)

ModelGroups = dict[str, frozenset[str]]


@runtime_checkable
class GroupPolicy(Protocol):
    """An authorizer that restricts models to groups (``gateway.auth.PolicyAuthorizer``)."""

    def set_model_groups(self, model_groups: Callable[[str], frozenset[str] | None]) -> None: ...


def model_groups(engine: Engine) -> ModelGroups:
    """Each restricted model's allowed groups: the union of its versions' ``allowed_groups``.

    The policy decides per model name (a request's version is not part of the decision), so a model is
    restricted as soon as one of its versions lists groups; versions without groups do not open it up.
    """
    with Session(engine) as session:
        rows = session.execute(
            select(m.Model.name, m.ModelVersion.allowed_groups).join(
                m.ModelVersion, m.ModelVersion.model_id == m.Model.id
            )
        ).all()
    groups: dict[str, set[str]] = {}
    for name, allowed in rows:
        if allowed:
            groups.setdefault(name, set()).update(allowed)
    return {name: frozenset(g) for name, g in groups.items()}


def on_loop(action: Callable[[], object]) -> None:
    """Run ``action`` on the event loop from one of its worker threads (or here, outside one)."""
    try:
        anyio.from_thread.run_sync(action)
    except RuntimeError:  # not in an anyio worker thread: no loop to hand over to
        action()


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
        self.engine: Engine | None = None
        self.current: tuple[Backend, ...] | None = None
        self.groups: ModelGroups | None = None
        self.policy: GroupPolicy | None = None
        self._loop = Periodic(self.refresh, interval_s, "catalog-sync")
        self._failing = False

    @property
    def interval_s(self) -> float:
        return self._loop.interval_s

    @interval_s.setter
    def interval_s(self, value: float) -> None:
        self._loop.interval_s = value

    def apply_groups(self, groups: ModelGroups) -> bool:
        """Hand the policy a new lookup if some model's groups changed."""
        if groups == self.groups:
            return False
        self.groups = groups
        if self.policy is not None:
            self.policy.set_model_groups(groups.get)
            log.info("model access: %d model(s) restricted to groups", len(groups))
        return True

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
            backends, groups = await asyncio.to_thread(self._read, self.engine)
        except Exception as exc:  # keep the last backends and groups (fail-static, not open)
            if not self._failing:
                log.warning("catalog backends not read, the last ones stay in use: %s", why_unreadable(exc))
            self._failing = True
            return False
        self._failing = False
        self.apply_groups(groups)
        return self.apply(backends)

    @staticmethod
    def _read(engine: Engine) -> tuple[list[Backend], ModelGroups]:
        return routable_backends(engine), model_groups(engine)

    def refresh_blocking(self) -> None:
        """From a worker thread of the event loop (a sync endpoint): read here, publish on the loop."""
        if self.engine is None:
            return
        backends, groups = self._read(self.engine)

        def publish() -> None:
            self.apply_groups(groups)
            self.apply(backends)

        on_loop(publish)

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        await self.refresh()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
