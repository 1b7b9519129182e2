"""The protocol-neutral data plane shared by the gRPC and HTTP frontends.

auth -> policy -> route -> forward (through a frontend-supplied ``send``) -> record. Frontends do the
protocol work (parsing the few header fields, forwarding bytes, mapping errors); everything that
decides something lives here, once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, NoReturn, TypeVar

from prometheus_client import CollectorRegistry

from gateway.core.identity import Authenticator, Authorizer, Principal
from gateway.core.recording import UsageEvent, UsageRecorder, decode_tag
from gateway.errors import (
    BackendError,
    BackendUnreachable,
    DeadlineExceeded,
    InvalidArgument,
    ModelNotFound,
    PermissionDenied,
    Unavailable,
    echo,
)
from gateway.limits.limiter import RateLimiter
from gateway.observability.metrics import gateway_metrics
from gateway.observability.observer import InferenceObserver, InferenceSpan
from gateway.routing.backend import Backend, Protocol
from gateway.routing.balancer import LoadSignal, QueueView, choose_least_loaded
from gateway.routing.circuit import CircuitBreaker
from gateway.routing.registry import Registry
from gateway.state.base import SharedState

T = TypeVar("T")

# A failed request is sent at most once more, elsewhere: never retried twice.
MAX_ATTEMPTS = 2
# Model names an error message lists at most (it travels back in a header over gRPC).
_LISTED = 20


def _listed(names: list[str]) -> str:
    shown = ", ".join(n if len(n) <= 80 else n[:80] + "..." for n in names[:_LISTED])
    more = f", ... ({len(names)} in all)" if len(names) > _LISTED else ""
    return (shown + more) or "none"


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    ready: bool


class InferenceTarget(NamedTuple):
    """What an inference asks for, as a frontend read it from its protocol's request (a tuple: one
    is built per request)."""

    model: str
    version: str
    inferences: int  # the batch size (0 when unknown)
    nbytes: int  # the request's size, for the byte-rate limit


@dataclass(frozen=True)
class CallContext:
    """What a frontend knows about the caller, independent of protocol."""

    authorization: str | None
    request_id: str = ""
    job_id: str | None = None
    dataset: str | None = None


class DataPlane:
    def __init__(
        self,
        authenticator: Authenticator,
        authorizer: Authorizer,
        registry: Registry,
        load: SharedState,
        recorder: UsageRecorder,
        rng: random.Random | None = None,
        *,
        queues: QueueView | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        observer: InferenceObserver | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.registry = registry
        self.load = load
        self.recorder = recorder
        self._rng = rng or random.Random()  # noqa: S311 - load spreading, not cryptography
        self.signal = LoadSignal(load, queues)
        self.breaker = breaker or CircuitBreaker(load)
        self.limiter = limiter
        self.draining = False  # set at shutdown: readiness probes fail while in-flight work finishes
        # Frontends record each inference through it (metrics, access log); unexposed by default.
        self.observer = observer or InferenceObserver(gateway_metrics(CollectorRegistry()), registry)

    def ready(self) -> bool:
        """Readiness: some backend is healthy and the gateway is not draining (it goes false first)."""
        return not self.draining and bool(self.registry.snapshot.healthy_backends())

    async def admit(self, principal: Principal, inferences: int, nbytes: int) -> None:
        """Rate limits and quotas: raise ResourceExhausted (with retry-after) when over them."""
        if self.limiter is not None:
            await self.limiter.admit(principal, inferences, nbytes)

    async def authenticate(self, ctx: CallContext) -> Principal:
        return await self.authenticator.authenticate(ctx.authorization)

    async def authorize_model(
        self, ctx: CallContext, model: str, span: InferenceSpan | None = None
    ) -> Principal:
        principal = await self.authenticator.authenticate(ctx.authorization)
        if span is not None:
            span.caller(principal)  # before the policy check: a denial is counted by issuer
        self.authorizer.authorize_infer(principal, model)
        return principal

    def route(
        self, model: str, version: str = "", exclude: Iterable[str] = (), protocol: Protocol = "grpc"
    ) -> Backend:
        """The least-loaded healthy backend serving ``model[:version]`` over ``protocol``."""
        candidates = self.registry.snapshot.candidates(model, version, protocol)
        skip = set(exclude)
        candidates = [b for b in candidates if b.id not in skip and self.breaker.available(b.id)]
        if not candidates:
            self._unroutable(model, version, protocol)
        return choose_least_loaded(candidates, self.signal, self._rng)

    def check_servable(self, model: str, version: str = "", protocol: Protocol = "grpc") -> None:
        """Raise what :meth:`route` would when nothing can serve, without choosing a backend."""
        if not self.registry.snapshot.candidates(model, version, protocol):
            self._unroutable(model, version, protocol)

    def _unroutable(self, model: str, version: str, protocol: Protocol) -> NoReturn:
        snapshot = self.registry.snapshot
        known = snapshot.known_models()
        label = f"{echo(model)} version {echo(version)}" if version else echo(model)
        if model not in known or (version and version not in known[model]):
            names = _listed(sorted(known))
            raise ModelNotFound(
                f"model {label} is not served by any registered facility (models available: {names})"
            )
        if protocol != "grpc" and snapshot.candidates(model, version, "grpc"):
            raise Unavailable(
                f"model {label} is served only by facilities without an {protocol.upper()} endpoint; "
                "use the gateway's gRPC endpoint (tritonclient.grpc) for it"
            )
        raise Unavailable(f"model {label} is registered but no healthy backend can serve it now; retry later")

    def least_loaded_healthy(self, protocol: Protocol = "grpc") -> Backend | None:
        """Any healthy backend (for server-level calls such as server metadata), least loaded first."""
        healthy = self.registry.snapshot.healthy_backends(protocol)
        return min(healthy, key=self.signal) if healthy else None

    def may_use(self, principal: Principal, model: str) -> bool:
        try:
            self.authorizer.authorize_infer(principal, model)
        except PermissionDenied:
            return False
        return True

    def statistics_targets(
        self, principal: Principal, model: str, version: str, protocol: Protocol = "grpc"
    ) -> list[Backend]:
        """Backends whose statistics answer a statistics call: those serving ``model``, or all."""
        snapshot = self.registry.snapshot
        if not model:
            return snapshot.healthy_backends(protocol)
        self.authorizer.authorize_infer(principal, model)
        backends = snapshot.candidates(model, version, protocol)
        if not backends:
            try:
                self._unroutable(model, version, protocol)
            except ModelNotFound as exc:
                # Triton answers statistics of a model it does not have with INVALID_ARGUMENT / 400.
                raise InvalidArgument(exc.message) from exc
        return backends

    def repository_index(self, protocol: Protocol = "grpc") -> list[IndexEntry]:
        """Every model version any facility reported, and whether one can serve it now."""
        snapshot = self.registry.snapshot
        return [
            IndexEntry(name, version, bool(snapshot.candidates(name, version, protocol)))
            for name, versions in sorted(snapshot.known_models().items())
            for version in sorted(versions)
        ]

    async def forward(
        self,
        model: str,
        version: str,
        send: Callable[[Backend], Awaitable[T]],
        protocol: Protocol = "grpc",
        deadline: float | None = None,
        unavailable: Callable[[T], bool] | None = None,
    ) -> tuple[T, Backend]:
        """Send to the least-loaded backend; retry elsewhere only what never reached a backend.

        ``deadline`` (``time.monotonic()``) bounds the failover: no retry starts after it, and a
        retry is cut off by it. ``unavailable(answer)`` tells the circuit breaker an answer means the
        backend is unavailable (HTTP passes a 503 through as an answer, not an exception).
        """
        tried: list[str] = []
        while True:
            backend = self.route(model, version, tried, protocol)
            breaker = self.breaker
            breaker.dispatched(backend.id)
            self.load.acquire(backend.id)
            try:
                if tried and deadline is not None:
                    result = await asyncio.wait_for(send(backend), deadline - time.monotonic())
                else:
                    result = await send(backend)
            except (BackendUnreachable, BackendError) as exc:
                if isinstance(exc, BackendError) and exc.grpc_code != "UNAVAILABLE":
                    breaker.succeeded(backend.id)  # it answered: the backend is up
                    raise
                if isinstance(exc, BackendUnreachable):
                    self.registry.mark_unreachable(backend.id, exc.message)
                breaker.failed(backend.id, exc.message)
                # UNAVAILABLE also covers a backend that died with the request in flight (it may
                # have run it): inference is stateless, so it is sent once more, never twice.
                tried.append(backend.id)
                if len(tried) >= MAX_ATTEMPTS:
                    raise
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceeded(
                        f"{exc.message}; the request's deadline ran out before it could be retried"
                    ) from exc
            except TimeoutError as exc:
                breaker.finished(backend.id)
                raise DeadlineExceeded(
                    f"backend {backend.id} did not answer within the request's deadline"
                ) from exc
            except BaseException:
                breaker.finished(backend.id)
                raise
            else:
                if unavailable is not None and unavailable(result):
                    breaker.failed(backend.id, "answered that it is unavailable")
                else:
                    breaker.succeeded(backend.id)
                return result, backend
            finally:
                self.load.release(backend.id)

    async def infer(
        self,
        ctx: CallContext,
        principal: Principal,
        target: InferenceTarget,
        send: Callable[[Backend], Awaitable[T]],
        *,
        protocol: Protocol,
        deadline: float,
        served_version: Callable[[T], str | None],
        unavailable: Callable[[T], bool] | None = None,
    ) -> tuple[T, Backend, str]:
        """The one inference use case both frontends share: authorize -> admit -> forward -> record.

        ``served_version(answer)`` is the version the backend says it served, or None when the answer
        is not a success (an HTTP error passed through): only successes are recorded as usage.
        """
        self.authorizer.authorize_infer(principal, target.model)
        await self.admit(principal, target.inferences, target.nbytes)  # rate limits
        answer, backend = await self.forward(
            target.model, target.version, send, protocol, deadline=deadline, unavailable=unavailable
        )
        served = served_version(answer)
        if served is not None:
            self.record(ctx, principal, backend, target.model, target.version, served, target.inferences)
        return answer, backend, served or ""

    def record(
        self,
        ctx: CallContext,
        principal: Principal,
        backend: Backend,
        model: str,
        version_requested: str,
        version_served: str,
        inferences: int,
    ) -> None:
        self.recorder.record(
            UsageEvent(
                model=model,
                version_requested=version_requested,
                version_served=version_served,
                facility=backend.facility,
                backend_id=backend.id,
                subject=principal.subject,
                issuer=principal.issuer,
                job_id=decode_tag(ctx.job_id),
                dataset=decode_tag(ctx.dataset),
                inferences=inferences,
            )
        )
