"""The app factory: builds a gateway from settings and owns its resources' lifetime.

Nothing is created at import time; :meth:`Gateway.start` opens channels, sockets and background
tasks, :meth:`Gateway.stop` closes them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Collection, Iterator

import grpc
import uvicorn
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.registry import Collector

from gateway.auth import build_auth
from gateway.auth.outbound import BackendCredentials, OutboundCredentials
from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.backends.http_pool import HttpBackendPool
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.catalog.service import Catalog, default_recorder
from gateway.config import Settings, parse_address
from gateway.core.dataplane import DataPlane
from gateway.core.identity import Authenticator, Authorizer
from gateway.core.recording import UsageRecorder
from gateway.envoy.ads import AdsServer
from gateway.envoy.ads import register as register_ads
from gateway.envoy.controlplane import EnvoyDataPlane
from gateway.envoy.internal_api import internal_router
from gateway.envoy.ratelimit import RateLimitService
from gateway.envoy.ratelimit import register as register_rate_limit_service
from gateway.envoy.render import SLOW_GRPC, SLOW_HTTP
from gateway.envoy.usage import UsageSink
from gateway.frontends.grpc.service import InferenceService
from gateway.frontends.http.app import create_http_app
from gateway.limits.limiter import RateLimiter
from gateway.observability.backends import backend_state_collector
from gateway.observability.endpoint import EnvoyStats, MetricsEndpoint
from gateway.observability.metrics import gateway_metrics
from gateway.observability.multiprocess import exposition_registry
from gateway.observability.observer import InferenceObserver
from gateway.observability.overload import EnvoyOverflowWatch, Refusals, envoy_overflow_stats
from gateway.observability.provenance import ProvenanceMetrics
from gateway.routing.backend import Backend
from gateway.routing.circuit import CircuitBreaker
from gateway.routing.health import HealthMonitor
from gateway.routing.probes import GrpcProber
from gateway.routing.queues import BackendQueues
from gateway.routing.registry import Registry
from gateway.state import SharedState, build_state

log = logging.getLogger(__name__)


def static_backends(settings: Settings) -> list[Backend]:
    return [
        Backend(
            id=Backend.make_id(b.facility, b.grpc),
            facility=b.facility,
            grpc_address=b.grpc,
            http_address=b.http,
            metrics_address=b.metrics,
            capacity=b.capacity,
        )
        for b in settings.backends
    ]


def _listen_socket(address: str) -> socket.socket:
    """A bound TCP socket with SO_REUSEPORT, so ``--workers N`` processes share one port."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto
    # says TCP; with proto 0 every response waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our event loop: signals belong to the process owner, not to uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        authenticator: Authenticator | None = None,
        authorizer: Authorizer | None = None,
        recorder: UsageRecorder | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.metrics_registry = metrics_registry or REGISTRY
        static = static_backends(settings)
        self.registry = Registry(static)
        self.load: SharedState = build_state(
            settings.redis_url,
            prefix=settings.state.key_prefix,
            sync_interval_s=settings.state.sync_interval_s,
            metrics_registry=self.metrics_registry,
        )
        self.recorder: UsageRecorder = recorder or default_recorder(settings)
        # The catalog (engine opened in start): admin API sessions, catalog backends for the router,
        # and the usage writer when the recorder is the batched database one (as in serve()).
        batched = self.recorder if isinstance(self.recorder, BatchedUsageRecorder) else None
        self.catalog = Catalog(settings.database_url, self.registry, static, recorder=batched)
        if authenticator is None or authorizer is None:
            authenticator, authorizer = build_auth(settings.auth, registry=self.metrics_registry)
        self.authenticator = authenticator
        self.authorizer = authorizer
        outbound = {
            Backend.make_id(b.facility, b.grpc): OutboundCredentials(b.credentials)
            for b in settings.backends
            if b.credentials is not None and b.credentials.kind != "none"
        }
        self.credentials = BackendCredentials(outbound)
        # Backends that need the gateway's own credential: only the Python path presents it.
        self.credentials_backends = frozenset(outbound)
        self.pool = GrpcBackendPool(settings.routing.max_message_bytes, self.credentials)
        self.http_pool = HttpBackendPool(self.credentials)  # client opened in start(), closed in stop()
        routing = settings.routing
        self.queues = BackendQueues(self.registry, routing.queue_scrape_interval_s, routing.probe_timeout_s)
        self.breaker = CircuitBreaker(
            self.load,
            routing.circuit_failure_threshold,
            routing.circuit_base_ejection_s,
            routing.circuit_max_ejection_s,
        )
        metrics = gateway_metrics(self.metrics_registry)
        observer = InferenceObserver(metrics, self.registry, access_log=settings.access_log)
        self.dataplane = DataPlane(
            authenticator,
            authorizer,
            self.registry,
            self.load,
            self.recorder,
            queues=self.queues,
            breaker=self.breaker,
            limiter=RateLimiter(settings.limits, self.load),
            observer=observer,
        )
        if batched is not None:
            batched.observer = ProvenanceMetrics(metrics)
        # What GET /metrics serves (all workers' values merged under --workers N).
        self.metrics_exposition = exposition_registry(
            self.metrics_registry,
            [backend_state_collector(self.metrics_registry, self.registry, self.breaker.ejected)],
        )
        self.health = HealthMonitor(
            self.registry,
            GrpcProber(self.pool),
            routing.health_interval_s,
            routing.probe_timeout_s,
            max_backoff_s=routing.health_max_backoff_s,
            on_healthy=self.breaker.probe_succeeded,
        )
        # The catalog's consistency check probes through the pool; its model groups feed the policy.
        self.catalog.attach(settings, self.pool, authorizer, self.metrics_registry)
        self.grpc_server: grpc.aio.Server | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._http_server: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None
        # The data plane: Envoy on the public ports, the Python frontends behind it on loopback
        # (the slow path: anything Envoy cannot decide). Without Envoy they serve the public ports.
        self.envoy: EnvoyDataPlane | None = None
        self.control_grpc_port = 0
        self.control_http_port = 0
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.ads = AdsServer()  # Envoy's routes, clusters and endpoints, over its one ADS stream
        self._overflow: EnvoyOverflowWatch | None = None
        self.usage = UsageSink(self.recorder, observer, lambda: self.registry.snapshot, self._backend_at)

    def _backend_at(self, host: str, port: int) -> Backend | None:
        """The backend listening at ``host:port`` (an upstream address in Envoy's access log)."""
        backend_id = self.envoy.backend_at(host, port) if self.envoy is not None else None
        return self.registry.snapshot.backends.get(backend_id) if backend_id is not None else None

    def _model_groups(self, model: str) -> Collection[str] | None:
        # Looked up each time: the catalog replaces the authorizer's lookup when groups change.
        lookup = getattr(self.authorizer, "model_groups", None)
        return lookup(model) if lookup is not None else None

    def _start_metrics(self) -> None:
        if self.settings.listen.metrics is None:
            return
        sources: list[Collector] = [self.metrics_exposition]
        if self.envoy is not None:
            process = self.envoy.process
            sources.append(EnvoyStats(lambda: process.admin_url))
        self.metrics_endpoint = MetricsEndpoint(self.settings.listen.metrics, sources)
        self.metrics_endpoint.start()

    async def start(self) -> None:
        await self.load.start()  # Redis unreachable is not fatal: load state fails open
        await self.catalog.start()
        await self.http_pool.start()
        await self.health.start()
        await self.queues.start()
        max_bytes = self.settings.routing.max_message_bytes
        self.grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.so_reuseport", 1),
                # grpc-core's backlog of calls the application has not picked up yet: past the soft
                # limit (default 1000) it drops calls at random, seen by the client as a bare
                # CANCELLED, uncounted and unlogged (24 % of a 3,000-call flood). Overload is refused
                # where it is counted and logged instead (Envoy's breaker, observability/overload.py).
                ("grpc.server.max_pending_requests", 100_000),
                ("grpc.server.max_pending_requests_hard_limit", 100_000),
            ]
        )
        service = InferenceService(self.dataplane, self.pool, self.settings.routing.default_timeout_s)
        self.grpc_server.add_generic_rpc_handlers((service.generic_handler(),))
        use_envoy = self.settings.envoy.enabled
        if use_envoy:
            register_ads(self.grpc_server, self.ads)
            if self.dataplane.limiter is not None:
                register_rate_limit_service(self.grpc_server, RateLimitService(self.dataplane.limiter))
        grpc_listen = "127.0.0.1:0" if use_envoy else self.settings.listen.grpc
        http_listen = "127.0.0.1:0" if use_envoy else self.settings.listen.http
        self.grpc_port = self.grpc_server.add_insecure_port(grpc_listen)
        if self.grpc_port == 0:
            raise OSError(f"cannot listen for gRPC on {grpc_listen}: address in use?")
        await self.grpc_server.start()

        sock = _listen_socket(http_listen)
        self.http_port = sock.getsockname()[1]
        app = create_http_app(self)
        if use_envoy:
            app.include_router(internal_router(self.authenticator, self.authorizer))
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=max(1, round(self.settings.shutdown_grace_s)),
        )
        self._http_server = _EmbeddedServer(config)
        self._http_task = asyncio.create_task(self._http_server.serve(sockets=[sock]), name="http")
        while not self._http_server.started:
            if self._http_task.done():
                self._http_task.result()
            await asyncio.sleep(0.01)
        self.control_grpc_port, self.control_http_port = self.grpc_port, self.http_port
        if use_envoy:
            self.envoy = EnvoyDataPlane(
                self.settings,
                control_grpc=("127.0.0.1", self.control_grpc_port),
                control_http=("127.0.0.1", self.control_http_port),
                snapshot=lambda: self.registry.snapshot,
                pending=self.queues.pending_by_model,
                model_groups=self._model_groups,
                credentialed=self.credentials_backends,
                auth_enabled=self.settings.auth.enabled,
                ads=self.ads,
                usage=self.usage,
            )
            await self.envoy.start()
            self.grpc_port, self.http_port = self.envoy.grpc_port, self.envoy.http_port
            process = self.envoy.process
            # Envoy's refusals on the way to the slow path (its circuit breaker) are counted and logged.
            self._overflow = EnvoyOverflowWatch(
                envoy_overflow_stats(process.counters),
                Refusals(self.metrics_registry),
                {SLOW_GRPC: "grpc", SLOW_HTTP: "http"},
            )
            await self._overflow.start()
            self._start_metrics()
            return
        self._start_metrics()
        log.info(
            "gateway listening: gRPC %s (port %d), HTTP %s (port %d); %d backends",
            self.settings.listen.grpc,
            self.grpc_port,
            self.settings.listen.http,
            self.http_port,
            len(self.registry.snapshot.backends),
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then close: requests in flight get ``grace_s`` (default: shutdown_grace_s)."""
        grace_s = self.settings.shutdown_grace_s if grace_s is None else grace_s
        self.dataplane.draining = True  # readiness fails first, so load balancers stop sending
        started = time.monotonic()
        log.info("draining: readiness is false; requests in flight have up to %.0f s", grace_s)
        if self.envoy is not None:
            if self._overflow is not None:
                await self._overflow.stop()
            await self.envoy.drain(grace_s)
            await self.envoy.stop()
        if self._http_server is not None:
            self._http_server.should_exit = True
        if self._http_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._http_task, grace_s + 1)
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace_s)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        await self.health.stop()
        await self.queues.stop()
        await self.load.close()
        await self.catalog.stop()  # flushes the usage buffer
        await self.pool.close()
        await self.http_pool.close()
        await self.credentials.aclose()
        aclose = getattr(self.authenticator, "aclose", None)
        if aclose is not None:
            await aclose()
        log.info("drained and stopped in %.1f s", time.monotonic() - started)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run a gateway until ``stop`` is set, then drain for ``shutdown_grace_s``."""
    gateway = Gateway(settings, recorder=BatchedUsageRecorder())
    await gateway.start()
    try:
        await stop.wait()
    finally:
        await gateway.stop()
