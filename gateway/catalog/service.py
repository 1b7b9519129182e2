"""The catalog as a gateway resource: engine, sessions, router sync and (optionally) the usage writer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.catalog import migrate
from gateway.catalog.db import make_engine, make_sessionmaker
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.catalog.sync import CatalogSync
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)


class CatalogNotOpen(RuntimeError):
    pass


class Catalog:
    def __init__(
        self,
        url: str,
        registry: Registry,
        static_backends: Sequence[Backend] = (),
        *,
        refresh_s: float = 5.0,
        recorder: BatchedUsageRecorder | None = None,
    ) -> None:
        self.url = url
        self.sync = CatalogSync(registry, static_backends, refresh_s)
        self.recorder = recorder
        self.engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    async def start(self) -> None:
        self.engine = make_engine(self.url)
        self._sessions = make_sessionmaker(self.engine)
        try:
            if not migrate.is_current(self.engine):
                log.warning(
                    "the catalog database is not at the newest schema: run `sonic-gateway db upgrade`"
                )
        except Exception as exc:
            log.warning("the catalog database cannot be reached: %s", exc)
        await self.sync.start(self.engine)
        if self.recorder is not None:
            await self.recorder.start(self.engine)

    def session(self) -> Session:
        if self._sessions is None:
            raise CatalogNotOpen("the catalog is not open (Gateway.start not called)")
        return self._sessions()

    async def stop(self) -> None:
        await self.sync.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
            self._sessions = None
