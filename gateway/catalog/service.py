"""The catalog as a gateway resource: engine, sessions, router and policy sync, the consistency check and
(optionally) the usage writer."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.catalog import migrate
from gateway.catalog.db import brief, is_sqlite, make_engine, make_sessionmaker
from gateway.catalog.monitor import ConsistencyMonitor
from gateway.catalog.probe import TritonModelProbe
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.catalog.sync import CatalogSync, GroupPolicy, on_loop
from gateway.config import Settings
from gateway.core.recording import InMemoryRecorder, UsageRecorder
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)


class CatalogNotOpen(RuntimeError):
    pass


def database_configured(settings: Settings) -> bool:
    """``database_url`` was set (file, environment or code), not the implicit SQLite default."""
    return "database_url" in settings.model_fields_set


def default_recorder(settings: Settings) -> UsageRecorder:
    """Usage goes to the catalog database when one is configured, else it is kept in memory: the
    implicit SQLite default in the working directory is not written behind the back of an embedding
    program or a test; ``serve`` always records in the database."""
    return BatchedUsageRecorder() if database_configured(settings) else InMemoryRecorder()


class Catalog:
    """Opening the database (``start``):

    - SQLite is the gateway's own: created and migrated to the newest schema on start.
    - The implicit default (``database_url`` not configured) in an embedding program or a test, i.e.
      without the database usage writer that ``serve`` always has, is a scratch SQLite file in a
      temporary directory, removed on stop: nothing is written to the working directory behind the
      embedder's back (the same rule as :func:`default_recorder`).
    - Any other database (PostgreSQL) is migrated by the operator (``sonic-gateway db upgrade``);
      start says so, loudly, when that was not done.
    """

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
        self.registry = registry
        self.sync = CatalogSync(registry, static_backends, refresh_s)
        self.recorder = recorder
        self.consistency: ConsistencyMonitor | None = None
        self.engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self.implicit_default = False  # set by attach(): database_url was not configured
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def attach(
        self,
        settings: Settings,
        pool: GrpcBackendPool,
        authorizer: object,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        """Wire the gateway's parts in: the consistency check probes through ``pool``, and ``authorizer``
        gets each model's allowed groups when it restricts models to groups."""
        self.implicit_default = not database_configured(settings)
        self.sync.interval_s = settings.catalog.refresh_s
        self.sync.policy = authorizer if isinstance(authorizer, GroupPolicy) else None
        self.consistency = ConsistencyMonitor(
            self.registry,
            TritonModelProbe(pool),
            settings.catalog.consistency_interval_s,
            settings.routing.probe_timeout_s,
            metrics_registry,
        )

    async def start(self) -> None:
        url = self.url
        if self.implicit_default and self.recorder is None and is_sqlite(url):
            self._scratch = tempfile.TemporaryDirectory(prefix="sonic-catalog-")
            url = f"sqlite:///{self._scratch.name}/catalog.db"
            log.info("no database_url configured: the catalog is a scratch database until the gateway stops")
        self.engine = make_engine(url)
        self._sessions = make_sessionmaker(self.engine)
        await asyncio.to_thread(self._prepare, url, self.engine)
        await self.sync.start(self.engine)
        if self.consistency is not None:
            await self.consistency.start(self.engine)
        if self.recorder is not None:
            await self.recorder.start(self.engine)

    @staticmethod
    def _prepare(url: str, engine: Engine) -> None:
        where = make_url(url).render_as_string(hide_password=True)
        try:
            if is_sqlite(url):
                migrate.upgrade_sqlite(url, engine)
            elif not migrate.is_current(engine):
                log.error(
                    "the catalog database %s is at revision %s, not %s: run `sonic-gateway db upgrade` "
                    "(until then the admin API fails and usage stays in memory)",
                    where,
                    migrate.current_revision(engine),
                    migrate.head_revision(),
                )
        except Exception as exc:
            log.error("the catalog database %s cannot be used: %s", where, brief(exc))

    def session(self) -> Session:
        if self._sessions is None:
            raise CatalogNotOpen("the catalog is not open (Gateway.start not called)")
        return self._sessions()

    def after_write(self) -> None:
        """From an API worker thread after a commit: router and policy now, the consistency check soon."""
        self.sync.refresh_blocking()
        if self.consistency is not None:
            on_loop(self.consistency.wake)

    async def stop(self) -> None:
        await self.sync.stop()
        if self.consistency is not None:
            await self.consistency.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None
            self._sessions = None
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
