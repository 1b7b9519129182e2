"""The consistency check: each catalog backend's models against the catalog, on writes and periodically.

One round reads the catalog (a worker thread), asks every routed catalog backend which model versions
it reports ready and, for those the catalog knows or registered on it, their ModelConfig; then

- takes a backend out of routing for a model (that model only) when one of its versions differs from
  the catalog (signature, platform, batch size) or a version registered on it is not ready;
- writes back, in one transaction: the verdict per deployment (``consistency``, its reason,
  ``checked_at``), ``observed`` deployments for catalog versions a backend reports without a
  registration (removed when it stops reporting them), ``last_health_at`` and ``observed_models``;
- sets the ``sonic_gateway_catalog_model_consistent`` gauge.

None of this is on the inference path; the router only sees the resulting exclusions in its snapshot.
A backend that does not answer keeps its last verdict (the health monitor already takes it out of
routing); one that never answered is excluded for the models registered on it (fail-closed), so a
freshly registered backend serves nothing it was registered for before it was checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.catalog import models as m
from gateway.catalog.consistency import (
    CONSISTENT,
    MISMATCH,
    NOT_READY,
    UNREACHABLE,
    Expected,
    compare,
    mismatch_reason,
    not_ready_reason,
)
from gateway.catalog.db import brief
from gateway.catalog.metrics import model_consistent
from gateway.catalog.probe import ModelProbe
from gateway.core.periodic import Periodic
from gateway.errors import GatewayError
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)

Pair = tuple[str, str]  # (router backend id, model)


@dataclass(frozen=True)
class CatalogBackend:
    id: int
    router_id: str
    facility: str


@dataclass
class Plan:
    """What the catalog says: its backends, what is registered on each, and every known version."""

    backends: list[CatalogBackend] = field(default_factory=list)
    registered: dict[int, list[Expected]] = field(default_factory=dict)
    versions: dict[tuple[str, str], Expected] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    expected: Expected
    state: str
    reason: str = ""


@dataclass
class Report:
    """One backend's check: reachable or not, what it reports, and a verdict per catalog version."""

    backend: CatalogBackend
    checked_at: dt.datetime
    models: dict[str, frozenset[str]] | None = None  # None: it did not answer
    error: str = ""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def reachable(self) -> bool:
        return self.models is not None


def _expected(v: m.ModelVersion, model: str) -> Expected:
    return Expected(
        model_version_id=v.id,
        model=model,
        version=v.version,
        platform=v.platform,
        inputs=tuple(v.inputs),
        outputs=tuple(v.outputs),
        max_batch_size=v.max_batch_size,
    )


def load_plan(engine: Engine) -> Plan:
    plan = Plan()
    with Session(engine) as session:
        for version, model in session.execute(
            select(m.ModelVersion, m.Model.name).join(m.Model, m.ModelVersion.model_id == m.Model.id)
        ):
            plan.versions[(model, version.version)] = _expected(version, model)
        for backend, facility in session.execute(
            select(m.Backend, m.Facility.name)
            .join(m.Facility, m.Backend.facility_id == m.Facility.id)
            .where(m.Backend.protocol == "grpc")
            .order_by(m.Backend.id)
        ):
            plan.backends.append(
                CatalogBackend(backend.id, Backend.make_id(facility, backend.address), facility)
            )
        by_id = {e.model_version_id: e for e in plan.versions.values()}
        for backend_id, version_id in session.execute(
            select(m.Deployment.backend_id, m.Deployment.model_version_id).where(
                m.Deployment.state == "registered"
            )
        ):
            plan.registered.setdefault(backend_id, []).append(by_id[version_id])
    return plan


def write_back(engine: Engine, reports: Iterable[Report]) -> None:
    """All verdicts and observations of one round in one transaction."""
    with Session(engine) as session, session.begin():
        for report in reports:
            backend = session.get(m.Backend, report.backend.id)
            if backend is None:  # deleted while we checked
                continue
            rows = {
                d.model_version_id: d
                for d in session.scalars(select(m.Deployment).where(m.Deployment.backend_id == backend.id))
            }
            if report.models is None:
                for row in rows.values():
                    row.consistency, row.consistency_reason = UNREACHABLE, report.error
                    row.checked_at = report.checked_at
                continue
            backend.last_health_at = report.checked_at
            backend.observed_models = {k: sorted(v) for k, v in sorted(report.models.items())}
            seen = set()
            for verdict in report.verdicts:
                version_id = verdict.expected.model_version_id
                seen.add(version_id)
                found = rows.get(version_id)
                if found is None:
                    found = m.Deployment(backend_id=backend.id, model_version_id=version_id, state="observed")
                    session.add(found)
                found.consistency, found.consistency_reason = verdict.state, verdict.reason
                found.checked_at = report.checked_at
            for version_id, row in rows.items():
                if row.state == "observed" and version_id not in seen:
                    session.delete(row)


class ConsistencyMonitor:
    def __init__(
        self,
        registry: Registry,
        probe: ModelProbe,
        interval_s: float,
        timeout_s: float,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry
        self.probe = probe
        self.timeout_s = timeout_s
        self.engine: Engine | None = None
        self.reports: dict[str, Report] = {}  # by router id: the last round's, for the curious
        self.rounds = 0
        self._excluded: frozenset[Pair] = frozenset()
        self._answered: set[str] = set()  # router ids that answered a check at least once
        self._gauge = model_consistent(metrics_registry)
        self._labels: set[tuple[str, str, str]] = set()
        self._failing = False
        self._round: asyncio.Future[None] | None = None
        self._again = False
        self._stopping = False
        self._loop = Periodic(self.check_all, interval_s, "catalog-consistency")

    def wake(self) -> None:
        """Check now (after a catalog write), or again right after the round under way. Loop thread only.

        Rounds run in their own future, not inside the ``Periodic`` task: stopping the loop cancels
        that task, and a round cancelled there would abandon its database thread mid-transaction;
        ``stop()`` instead lets the round under way finish.
        """
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._rounds())
        else:
            self._again = True

    @property
    def busy(self) -> bool:
        """A round is under way (or queued right after it)."""
        return self._round is not None and not self._round.done()

    async def start(self, engine: Engine) -> None:
        self.engine = engine
        self._stopping = False
        self._loop.start()
        self.wake()  # the first round in the background: start() does not wait for backends

    async def stop(self) -> None:
        self._stopping = True
        await self._loop.stop()
        if self._round is not None:  # let it finish: its database work runs in a thread we cannot cancel
            await self._round

    async def check_all(self) -> None:
        """The periodic round (or the one under way); shielded, so that stopping the loop does not
        abandon a round's thread while it holds a database connection."""
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._rounds())
        await asyncio.shield(self._round)

    async def _rounds(self) -> None:
        while True:
            self._again = False
            # Never raises: the next round must still run.
            try:
                await self._check_all()
            except Exception:
                log.exception("the catalog consistency check failed; retrying at the next interval")
            if not self._again or self._stopping:
                return

    async def _check_all(self) -> None:
        if self.engine is None:
            return
        try:
            plan = await asyncio.to_thread(load_plan, self.engine)
        except Exception as exc:  # the database is down: keep the last verdicts (and exclusions)
            if not self._failing:
                log.warning("catalog consistency not checked: cannot read the catalog: %s", brief(exc))
            self._failing = True
            return
        self._failing = False
        routed = self.registry.snapshot.backends
        backends = [b for b in plan.backends if b.router_id in routed]
        reports = await asyncio.gather(*(self._check(routed[b.router_id], b, plan) for b in backends))
        self._publish(plan, reports)
        try:
            await asyncio.to_thread(write_back, self.engine, reports)
        except IntegrityError as exc:  # another replica or an admin wrote the same row: next round
            log.info("catalog consistency results not written (concurrent change): %s", exc.orig)
        except Exception as exc:
            log.warning("catalog consistency results not written: %s", exc)
        self.rounds += 1

    async def _check(self, backend: Backend, entry: CatalogBackend, plan: Plan) -> Report:
        now = dt.datetime.now(dt.UTC)
        try:
            models = await asyncio.wait_for(self.probe.ready_models(backend, self.timeout_s), self.timeout_s)
        except (GatewayError, TimeoutError) as exc:
            reason = (
                f"the backend did not answer the consistency check ({exc or type(exc).__name__}); "
                "its models are checked again when it answers"
            )
            return Report(entry, now, None, reason)
        wanted = {(e.model, e.version): e for e in plan.registered.get(entry.id, [])}
        for name, versions in models.items():
            for version in versions:
                known = plan.versions.get((name, version))
                if known is not None:
                    wanted[(name, version)] = known
        verdicts = await asyncio.gather(*(self._verdict(backend, e, models) for e in wanted.values()))
        return Report(entry, now, models, verdicts=list(verdicts))

    async def _verdict(
        self, backend: Backend, expected: Expected, models: dict[str, frozenset[str]]
    ) -> Verdict:
        reported = models.get(expected.model, frozenset())
        if expected.version not in reported:
            return Verdict(expected, NOT_READY, not_ready_reason(expected, sorted(reported)))
        try:
            served = await asyncio.wait_for(
                self.probe.model_config(backend, expected.model, expected.version, self.timeout_s),
                self.timeout_s,
            )
        except (GatewayError, TimeoutError) as exc:
            return Verdict(
                expected,
                MISMATCH,
                f"the backend did not return the configuration of {expected.model} version "
                f"{expected.version} ({exc or type(exc).__name__}); it gets no traffic for the model "
                "until it does",
            )
        problems = compare(expected, served)
        if problems:
            return Verdict(expected, MISMATCH, mismatch_reason(expected, problems))
        return Verdict(expected, CONSISTENT)

    def _publish(self, plan: Plan, reports: list[Report]) -> None:
        excluded: set[Pair] = set()
        for report in reports:
            rid = report.backend.router_id
            if report.reachable:
                self._answered.add(rid)
                excluded.update((rid, v.expected.model) for v in report.verdicts if v.state != CONSISTENT)
            elif rid in self._answered:  # keep the last verdict until it answers again
                excluded.update(p for p in self._excluded if p[0] == rid)
            else:  # never checked: nothing registered on it is served yet (fail-closed)
                excluded.update((rid, e.model) for e in plan.registered.get(report.backend.id, []))
        self._log_changes(excluded, reports)
        self._excluded = frozenset(excluded)
        self.registry.set_excluded(self._excluded)
        self.reports = {r.backend.router_id: r for r in reports}

        labels: set[tuple[str, str, str]] = set()
        for report in reports:
            rid, facility = report.backend.router_id, report.backend.facility
            models = {v.expected.model for v in report.verdicts} | {mo for r, mo in excluded if r == rid}
            if not report.reachable:  # keep the labels it had
                models |= {mo for mo, _, b in self._labels if b == rid}
            for model in models:
                labels.add((model, facility, rid))
                self._gauge.labels(model, facility, rid).set(0 if (rid, model) in excluded else 1)
        for gone in self._labels - labels:
            self._gauge.remove(*gone)
        self._labels = labels

    def _log_changes(self, excluded: set[Pair], reports: list[Report]) -> None:
        reasons = {
            (r.backend.router_id, v.expected.model): v.reason for r in reports for v in r.verdicts if v.reason
        }
        for rid, model in sorted(excluded - self._excluded):
            why = reasons.get((rid, model), "not checked yet")
            log.warning("backend %s takes no traffic for model %s: %s", rid, model, why)
        for rid, model in sorted(self._excluded - excluded):
            log.info("backend %s serves model %s as the catalog describes it: routed again", rid, model)
