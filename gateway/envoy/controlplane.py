"""The control plane: keeps Envoy's resources in step with settings, catalog, health and load.

:func:`build_view` is the pure half (registry snapshot + queues + policy -> view); :class:`EnvoyDataPlane`
owns the Envoy process and republishes the view whenever it changes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path

from gateway.config import LimitSettings, Settings, parse_address
from gateway.core.periodic import Periodic
from gateway.envoy.ads import AdsPublisher, AdsServer, PushStats
from gateway.envoy.binary import envoy_binary
from gateway.envoy.render import render_bootstrap
from gateway.envoy.supervisor import EnvoyProcess
from gateway.envoy.usage_log import LineSink, UsageLog
from gateway.envoy.view import Addresses, DataPlaneView, Endpoint, ModelView, StaticView
from gateway.routing.backend import Backend
from gateway.routing.registry import Snapshot

log = logging.getLogger("gateway.envoy")

ModelGroups = Callable[[str], Collection[str] | None]
Pending = Callable[[str], dict[str, int]]
# How often Envoy writes the usage log and the control plane reads it.
USAGE_FLUSH_S = 0.5
# Envoy's counters of failed writes and reopens of its access-log files (the usage log is the only one).
USAGE_WRITE_FAILURES = r"^filesystem\.(write|reopen)_failed$"


def limits_configured(limits: LimitSettings) -> bool:
    rates = [limits.default, *limits.subjects.values(), *limits.groups.values()]
    return any(r.inferences_per_s is not None or r.bytes_per_s is not None for r in rates)


def resolve_host(host: str) -> str | None:
    """An IP literal for an endpoint (EDS takes no names); None when it cannot be resolved."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    return str(infos[0][4][0]) if infos else None


class HostResolver:
    """``resolve_host`` with a memory: a view is rebuilt often, and a name is looked up (blocking,
    in the sync loop) at most once per ``ttl_s``, not once per backend, model and rebuild."""

    def __init__(self, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._known: dict[str, tuple[float, str | None]] = {}

    def __call__(self, host: str) -> str | None:
        now = self._clock()
        hit = self._known.get(host)
        if hit is None or now - hit[0] >= self._ttl_s:
            hit = (now, resolve_host(host))
            self._known[host] = hit
        return hit[1]


def _endpoint(
    backend: Backend, address: str, model: str, pending: Pending, resolve: Callable[[str], str | None]
) -> Endpoint | None:
    host, port = parse_address(address)
    ip = resolve(host)
    if ip is None:
        return None
    queue = pending(backend.id).get(model, 0)
    # Capacity sets the share; a long queue on Triton lowers it until the queue drains.
    weight = max(1, round(100 * backend.capacity / (1 + queue)))
    return Endpoint(backend.id, backend.facility, ip, port, weight)


def build_view(
    snapshot: Snapshot,
    *,
    pending: Pending,
    model_groups: ModelGroups,
    credentialed: Collection[str] = (),
    resolve: Callable[[str], str | None] = resolve_host,
) -> DataPlaneView:
    """The data plane for ``snapshot``: one entry per model some healthy, consistent backend serves.

    A model with any backend that needs the gateway's outbound credentials stays on the Python path
    (which presents them).
    """
    models = []
    for name in sorted(snapshot.serving):
        ids = snapshot.serving[name]
        if any(i in credentialed for i in ids):
            continue
        backends = [snapshot.backends[i] for i in ids]
        grpc = [e for b in backends if (e := _endpoint(b, b.grpc_address, name, pending, resolve))]
        http = [
            e
            for b in backends
            if b.http_address and (e := _endpoint(b, b.http_address, name, pending, resolve))
        ]
        version_sets = [snapshot.health[b.id].models.get(name, frozenset()) for b in backends]
        versions = frozenset.intersection(*version_sets) if version_sets else frozenset()
        groups = model_groups(name)
        models.append(
            ModelView(
                name=name,
                grpc=tuple(grpc),
                http=tuple(http),
                groups=tuple(sorted(groups)) if groups is not None else None,
                versions=tuple(sorted(versions)),
            )
        )
    return DataPlaneView(models=tuple(models))


class EnvoyDataPlane:
    """Renders, publishes and supervises; ``sync`` runs every ``sync_interval_s`` (and on wake())."""

    def __init__(
        self,
        settings: Settings,
        *,
        control_grpc: tuple[str, int],
        control_http: tuple[str, int],
        snapshot: Callable[[], Snapshot],
        pending: Pending,
        model_groups: ModelGroups,
        credentialed: Collection[str],
        auth_enabled: bool,
        ads: AdsServer,
        usage: LineSink,
    ) -> None:
        self.settings = settings
        envoy = settings.envoy
        self._owned_dir = envoy.work_dir is None
        self.workdir = Path(envoy.work_dir or tempfile.mkdtemp(prefix="sonic-envoy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.static = StaticView(
            addresses=Addresses(
                public_grpc=parse_address(settings.listen.grpc),
                public_http=parse_address(settings.listen.http),
                admin=parse_address(envoy.admin),
                control_grpc=control_grpc,
                control_http=control_http,
            ),
            auth_enabled=auth_enabled,
            default_timeout_s=settings.routing.default_timeout_s,
            # Envoy buffers a whole request (to read the model and check the body): up to the
            # largest request the gateway accepts at all.
            max_request_bytes=max(settings.routing.max_message_bytes, settings.routing.max_http_body_bytes),
            circuit_failure_threshold=settings.routing.circuit_failure_threshold,
            circuit_base_ejection_s=settings.routing.circuit_base_ejection_s,
            circuit_max_ejection_s=settings.routing.circuit_max_ejection_s,
            retry_max_request_bytes=settings.routing.retry_max_request_bytes,
            drain_time_s=settings.shutdown_grace_s,
            rate_limited=limits_configured(settings.limits),
            usage_log=str(self.workdir / "usage.log"),
        )
        self._snapshot = snapshot
        self._pending = pending
        self._model_groups = model_groups
        self._credentialed = frozenset(credentialed)
        self.ads = ads
        self.publisher = AdsPublisher(self.static, ads)
        self.view = DataPlaneView()
        self.last_push = PushStats()
        self.pushes = 0
        self.process = EnvoyProcess(
            envoy_binary(envoy.binary),
            self.workdir / "bootstrap.json",
            self.workdir,
            concurrency=envoy.concurrency,
            log_level=envoy.log_level,
            drain_time_s=settings.shutdown_grace_s,
            file_flush_s=USAGE_FLUSH_S,
        )
        self.usage_log = UsageLog(
            Path(self.static.usage_log),
            usage,
            lambda: self.process.admin("POST", "/reopen_logs"),
            interval_s=USAGE_FLUSH_S,
        )
        self._sync = Periodic(self._sync_once, envoy.sync_interval_s, "envoy-sync")
        self._last_snapshot: Snapshot | None = None
        self._resolve = HostResolver()
        self._endpoints: dict[tuple[str, int], str] = {}
        self._last_rest: tuple[object, ...] = ()
        self._write_failures = 0
        self._write_watch = Periodic(self._check_usage_writes, 5.0, "envoy-usage-writes")
        self.grpc_port = 0
        self.http_port = 0

    def current_view(self) -> DataPlaneView:
        return build_view(
            self._snapshot(),
            pending=self._pending,
            model_groups=self._model_groups,
            credentialed=self._credentialed,
            resolve=self._resolve,
        )

    def backend_at(self, host: str, port: int) -> str | None:
        """The backend id at an upstream address Envoy logged (from every view published so far:
        a backend that has just left the view still has requests in flight to account for)."""
        return self._endpoints.get((host, port))

    def publish(self, view: DataPlaneView) -> PushStats:
        stats = self.publisher.publish(view)
        self.view = view
        for model in view.models:
            for endpoint in (*model.grpc, *model.http):
                self._endpoints[(endpoint.host, endpoint.port)] = endpoint.backend_id
        if stats.resources_changed:
            self.pushes += 1
            self.last_push = stats
            changed, size = stats.resources_changed, stats.bytes_changed
            log.debug("envoy resources published: %d changed, %d bytes", changed, size)
        return stats

    def _inputs(self) -> tuple[Snapshot, tuple[object, ...]]:
        """What a view is built from, cheaply: the same inputs build an equal view, so none is built."""
        snapshot = self._snapshot()  # immutable, replaced on every change: compared by identity
        pending = tuple((b, tuple(sorted(self._pending(b).items()))) for b in sorted(snapshot.backends))
        groups = tuple((m, self._model_groups(m)) for m in sorted(snapshot.serving))
        return snapshot, (pending, groups)

    async def _sync_once(self) -> None:
        try:
            snapshot, rest = self._inputs()
            if snapshot is self._last_snapshot and rest == self._last_rest:
                return  # a large catalog's view costs real CPU: build it only when something changed
            view = self.current_view()
            self._last_snapshot, self._last_rest = snapshot, rest
            if view != self.view:
                self.publish(view)
        except Exception:
            log.exception("could not publish the data plane's configuration; Envoy keeps the last one")

    async def _check_usage_writes(self) -> None:
        """Usage lines Envoy could not write (disk full, log unwritable) are never lost silently."""
        try:
            failed = sum((await self.process.counters(USAGE_WRITE_FAILURES)).values())
        except Exception:  # Envoy restarting: the next round reads it
            return
        if failed > self._write_failures:
            log.error(
                "envoy failed %d times to write or reopen the usage log %s (disk full or not "
                "writable?); requests served meanwhile may be missing from the catalog",
                failed - self._write_failures,
                self.static.usage_log,
            )
        self._write_failures = failed

    def wake(self) -> None:
        self._sync.wake()

    async def start(self) -> None:
        self.publish(self.current_view())
        await self.usage_log.start()  # first what an earlier run's Envoy wrote and no one read
        bootstrap = self.workdir / "bootstrap.json"
        bootstrap.write_text(json.dumps(render_bootstrap(self.static), indent=1), encoding="utf-8")
        started = time.monotonic()
        await self.process.start()
        ports = await self.process.listener_ports()
        self.grpc_port = ports.get("public_grpc", 0)
        self.http_port = ports.get("public_http", 0)
        # A restarted Envoy must come back on the same ports (port 0 in the settings means "any").
        addresses = dataclasses.replace(
            self.static.addresses,
            public_grpc=(self.static.addresses.public_grpc[0], self.grpc_port),
            public_http=(self.static.addresses.public_http[0], self.http_port),
        )
        self.static = dataclasses.replace(self.static, addresses=addresses)
        self.publisher.static = self.static
        bootstrap.write_text(json.dumps(render_bootstrap(self.static), indent=1), encoding="utf-8")
        self._sync.start()
        self._write_watch.start()
        log.info(
            "data plane (envoy) listening: gRPC %s (port %d), HTTP %s (port %d); ready in %.1f s",
            self.settings.listen.grpc,
            self.grpc_port,
            self.settings.listen.http,
            self.http_port,
            time.monotonic() - started,
        )

    async def drain(self, grace_s: float) -> None:
        await self.process.drain(grace_s)

    async def stop(self) -> None:
        await self._sync.stop()
        await self._write_watch.stop()
        await self.process.stop()
        # Envoy has exited (writing its last lines): the log is read to its end, then removed.
        await self.usage_log.stop(remove=True)
        if self._owned_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
