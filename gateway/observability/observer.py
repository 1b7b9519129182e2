"""The one place that records an inference: metrics, routing decisions and the access-log line.

Frontends open an :class:`InferenceSpan` around each inference (``with observer.inference(...)``),
tell it what they learn (model, caller, backend answer) and wrap the core's ``send`` with
:meth:`InferenceSpan.timed`, which times the backend and counts routing decisions. Everything else
(outcome from the exception, label values, histograms, the log line) happens here, once.

Hot-path cost: one small object per request, a tuple-keyed lookup of pre-bound label children per
(frontend, model, version, backend), a few counter increments and two histogram observations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.metrics import Counter, Gauge, Histogram

from gateway.errors import GRPC_TO_HTTP, BackendUnreachable, GatewayError, PermissionDenied, status_of
from gateway.observability.labels import UNKNOWN, ModelLabels
from gateway.observability.metrics import GatewayMetrics
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

if TYPE_CHECKING:
    from gateway.core.dataplane import CallContext
    from gateway.core.identity import Principal
    from gateway.envoy.usage import FastPathRequest, FastPathTally

T = TypeVar("T")
UNKNOWN_ISSUER = "unknown"  # as sonic_gateway_token_validations_total says it
ERROR_LIMIT = 500  # characters of an error message an access-log line repeats
access_log = logging.getLogger("gateway.access")
log = logging.getLogger(__name__)

# A backend's HTTP answer -> outcome (lower-case gRPC status name, as for gRPC); others "unknown".
_HTTP_OUTCOME = {
    200: "ok",
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "aborted",
    413: "resource_exhausted",
    429: "resource_exhausted",
    499: "cancelled",
    500: "internal",
    501: "unimplemented",
    503: "unavailable",
    504: "deadline_exceeded",
}


class _Series:
    """Label children for one (frontend, model, version, backend), each bound on first use (so a
    label set that only ever fails exports no zero-valued byte or inference series)."""

    __slots__ = ("_backend_time", "_inferences", "_labels", "_m", "_outcomes", "_request_bytes",
                 "_response_bytes", "overhead")  # fmt: skip

    def __init__(self, metrics: GatewayMetrics, labels: tuple[str, str, str, str, str]) -> None:
        self._m = metrics
        self._labels = labels
        self.overhead: Histogram = metrics.overhead.labels(*labels)  # every request has some
        self._inferences: Counter | None = None
        self._request_bytes: Counter | None = None
        self._response_bytes: Counter | None = None
        self._backend_time: Histogram | None = None
        self._outcomes: dict[tuple[str, str], Counter] = {}

    def outcome(self, outcome: str, code: str) -> Counter:
        child = self._outcomes.get((outcome, code))
        if child is None:
            child = self._outcomes[(outcome, code)] = self._m.requests.labels(*self._labels, outcome, code)
        return child

    def inferences(self) -> Counter:
        if self._inferences is None:
            self._inferences = self._m.inferences.labels(*self._labels)
        return self._inferences

    def request_bytes(self) -> Counter:
        if self._request_bytes is None:
            self._request_bytes = self._m.request_bytes.labels(*self._labels)
        return self._request_bytes

    def response_bytes(self) -> Counter:
        if self._response_bytes is None:
            self._response_bytes = self._m.response_bytes.labels(*self._labels)
        return self._response_bytes

    def count(
        self, outcome: str, code: str, requests: int, inferences: int, request_bytes: int, response_bytes: int
    ) -> None:
        """Requests with one outcome, and what they carried (zeros leave a series untouched)."""
        self.outcome(outcome, code).inc(requests)
        if inferences:
            self.inferences().inc(inferences)
        if request_bytes:
            self.request_bytes().inc(request_bytes)
        if response_bytes:
            self.response_bytes().inc(response_bytes)

    def backend_time(self) -> Histogram:
        if self._backend_time is None:
            self._backend_time = self._m.backend_time.labels(*self._labels)
        return self._backend_time


class InferenceSpan:
    """What one inference did; filled in by the frontend, recorded by the observer on exit."""

    __slots__ = ("attempts", "backend", "backend_s", "code", "error", "frontend", "inferences", "issuer",
                 "job_id", "model", "observer", "outcome", "reason", "request_bytes", "request_id",
                 "response_bytes", "served_version", "start", "subject", "trace_id", "version")  # fmt: skip

    def __init__(self, observer: InferenceObserver, frontend: str, ctx: CallContext, trace_id: str) -> None:
        self.observer = observer
        self.frontend = frontend
        self.request_id = ctx.request_id
        self.job_id = ctx.job_id
        self.trace_id = trace_id
        self.model = ""
        self.version = ""
        self.served_version = ""
        self.subject = ""
        self.issuer = ""
        self.backend: Backend | None = None
        self.backend_s = 0.0
        self.attempts = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.inferences = 0
        self.outcome = "ok"
        self.code = "200"
        self.error = ""  # what the client was told went wrong (never a token)
        self.reason = ""  # auth's short code for it (expired, bad_signature, missing_scope, ...)
        self.start = 0.0

    def target(self, model: str, version: str) -> None:
        self.model = model
        self.version = version

    def caller(self, principal: Principal) -> None:
        self.subject = principal.subject
        self.issuer = principal.issuer

    def answered(
        self,
        backend: Backend,
        response_bytes: int,
        inferences: int,
        served_version: str,
        status: int = 200,
        error: str = "",
    ) -> None:
        """The backend's answer (for HTTP, possibly an error status passed through, with its
        ``error`` text for the access log)."""
        self.backend = backend
        self.response_bytes = response_bytes
        self.served_version = served_version
        if status == 200:
            self.inferences = inferences
        else:
            self.outcome = _HTTP_OUTCOME.get(status, "unknown")
            self.code = str(status) if 100 <= status <= 599 else "500"
            self.error = error

    def timed(self, send: Callable[[Backend], Awaitable[T]]) -> Callable[[Backend], Awaitable[T]]:
        """``send`` that times the backend, counts the routing decision and notes ejections."""
        observer = self.observer

        async def timed_send(backend: Backend) -> T:
            gauge = observer.routed(self, backend)
            self.backend = backend
            self.attempts += 1
            gauge.inc()
            started = time.perf_counter()
            try:
                return await send(backend)
            except BackendUnreachable:
                observer.ejected(backend, "unreachable")
                raise
            finally:
                self.backend_s += time.perf_counter() - started
                gauge.dec()

        return timed_send

    def __enter__(self) -> InferenceSpan:
        self.start = time.perf_counter()
        self.observer.in_flight(self.frontend).inc()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.observer.finish(self, exc)
        except Exception:  # never let bookkeeping turn an answer into an error
            log.exception("could not record an inference")


def _trace_id(forwarded: Iterable[tuple[str, str]]) -> str:
    """The trace id of a W3C ``traceparent`` (version-traceid-parentid-flags), if there is one."""
    for key, value in forwarded:
        if key == "traceparent":
            parts = value.split("-")
            if len(parts) >= 4 and len(parts[1]) == 32 and parts[1].isalnum():
                return parts[1]
    return ""


class InferenceObserver:
    def __init__(self, metrics: GatewayMetrics, registry: Registry, access_log: bool = True) -> None:
        self.metrics = metrics
        self.labels = ModelLabels(registry)
        self.access_log = access_log
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._routes: dict[tuple[str, str, str, bool], Counter] = {}
        self._backend_gauges: dict[str, Gauge] = {}
        self._ejections: dict[tuple[str, str], Counter] = {}
        self._in_flight: dict[str, Gauge] = {}

    def inference(
        self, frontend: str, ctx: CallContext, forwarded: Iterable[tuple[str, str]] = ()
    ) -> InferenceSpan:
        return InferenceSpan(self, frontend, ctx, _trace_id(forwarded))

    # -- children, bound once -----------------------------------------------------------------------

    def in_flight(self, frontend: str) -> Gauge:
        gauge = self._in_flight.get(frontend)
        if gauge is None:
            gauge = self._in_flight[frontend] = self.metrics.in_flight.labels(frontend)
        return gauge

    def routed(self, span: InferenceSpan, backend: Backend) -> Gauge:
        """Count the routing decision; the backend's in-flight gauge for the caller to move."""
        key = (span.frontend, span.model, backend.id, span.attempts > 0)
        counter = self._routes.get(key)
        if counter is None:
            model = self.labels.model(span.model)
            attempt = "retry" if span.attempts else "first"
            counter = self.metrics.routing.labels(span.frontend, model, backend.facility, backend.id, attempt)
            if model != UNKNOWN:  # unknown names all share one child: not cached under each name
                self._routes[key] = counter
        counter.inc()
        gauge = self._backend_gauges.get(backend.id)
        if gauge is None:
            gauge = self._backend_gauges[backend.id] = self.metrics.backend_in_flight.labels(
                backend.facility, backend.id
            )
        return gauge

    def ejected(self, backend: Backend, reason: str) -> None:
        counter = self._ejections.get((backend.id, reason))
        if counter is None:
            counter = self._ejections[(backend.id, reason)] = self.metrics.ejections.labels(
                backend.facility, backend.id, reason
            )
        counter.inc()

    def _series_for(self, span: InferenceSpan) -> _Series:
        backend = span.backend
        backend_id = backend.id if backend is not None else ""
        version = span.served_version or span.version
        key = (span.frontend, span.model, version, backend_id)
        series = self._series.get(key)
        if series is None:
            model_label, version_label = self.labels.of(span.model, version)
            facility = backend.facility if backend is not None else ""
            series = _Series(self.metrics, (span.frontend, model_label, version_label, facility, backend_id))
            if model_label != UNKNOWN and version_label != UNKNOWN:  # bounded: only known names cached
                self._series[key] = series
        return series

    # -- the record ---------------------------------------------------------------------------------

    def finish(self, span: InferenceSpan, exc: BaseException | None) -> None:
        elapsed = time.perf_counter() - span.start
        self.in_flight(span.frontend).dec()
        if exc is not None:
            span.outcome, span.code = self._failure(span, exc)
        self._record(span, elapsed)

    def logs_each(self) -> bool:
        """Whether every inference gets its own access-log line (then nothing is counted in bulk)."""
        return self.access_log and access_log.isEnabledFor(logging.INFO)

    def _fast_path_span(
        self, request: FastPathRequest, backend: Backend | None, served_version: str
    ) -> InferenceSpan:
        from gateway.core.dataplane import CallContext  # at call time: the core imports this module

        ctx = CallContext(None, request.request_id, request.job_id)
        span = InferenceSpan(self, request.protocol, ctx, "")
        span.target(request.model, request.version)
        span.served_version = served_version
        span.subject, span.issuer = request.subject, request.issuer
        span.backend = backend
        span.attempts = 1 if backend is not None else 0
        return span

    def observe_fast_path(
        self, request: FastPathRequest, backend: Backend | None, served_version: str
    ) -> None:
        """One request Envoy served without Python (from its usage log): same series, same log."""
        span = self._fast_path_span(request, backend, served_version)
        span.backend_s = request.backend_s
        span.request_bytes, span.response_bytes = request.request_bytes, request.response_bytes
        if request.ok:
            span.inferences = request.inferences
        elif request.protocol == "grpc":
            span.outcome, span.code = request.code.lower(), str(GRPC_TO_HTTP.get(request.code, 500))
        else:
            span.outcome, span.code = _HTTP_OUTCOME.get(int(request.code), "unknown"), request.code
        if not request.ok:
            span.error = request.error
        self._record(span, request.duration_s)

    def observe_fast_path_served(
        self, tally: FastPathTally, backend: Backend | None, served_version: str
    ) -> None:
        """Answered fast-path requests that share every label, counted at once: the same series as
        :meth:`observe_fast_path` (each request's times still observed), no span per request. Only
        when no access-log line per request is wanted (:meth:`logs_each`)."""
        series = self._series_for(self._fast_path_span(tally.first, backend, served_version))
        series.count("ok", "200", tally.requests, tally.inferences, tally.request_bytes, tally.response_bytes)
        overhead, backend_time = series.overhead, series.backend_time() if backend is not None else None
        for elapsed, backend_s in tally.times:
            overhead.observe(max(0.0, elapsed - backend_s))
            if backend_time is not None:
                backend_time.observe(backend_s)

    def _record(self, span: InferenceSpan, elapsed: float) -> None:
        series = self._series_for(span)
        series.count(span.outcome, span.code, 1, span.inferences, span.request_bytes, span.response_bytes)
        overhead = max(0.0, elapsed - span.backend_s)
        series.overhead.observe(overhead)
        if span.attempts:
            series.backend_time().observe(span.backend_s)
        if self.access_log and access_log.isEnabledFor(logging.INFO):
            self._log(span, elapsed, overhead)

    def _failure(self, span: InferenceSpan, exc: BaseException) -> tuple[str, str]:
        if isinstance(exc, GatewayError):
            status = status_of(exc)
            span.error = exc.message  # as the client was told: never a token
            detail = getattr(exc, "detail", "")  # auth's fixed vocabulary (expired, missing_scope, ...)
            span.reason = detail if isinstance(detail, str) else ""
            if isinstance(exc, PermissionDenied):
                reason = span.reason or exc.reason
                self.metrics.authorization_denials.labels(span.issuer or UNKNOWN_ISSUER, reason).inc()
            return status.grpc_code.lower(), str(status.http_status)
        if isinstance(exc, asyncio.CancelledError):
            span.error = "the client cancelled the call or went away"
            return "cancelled", "499"
        span.error = f"internal error ({type(exc).__name__})"
        return "internal", "500"

    def _log(self, span: InferenceSpan, elapsed: float, overhead: float) -> None:
        backend = span.backend
        fields: dict[str, Any] = {
            "request_id": span.request_id,
            "frontend": span.frontend,
            "model": span.model[:200],
            "version": span.served_version or span.version,
            "facility": backend.facility if backend is not None else None,
            "backend": backend.id if backend is not None else None,
            "outcome": span.outcome,
            "status": int(span.code),
            "duration_ms": round(elapsed * 1e3, 3),
            "backend_ms": round(span.backend_s * 1e3, 3),
            "overhead_ms": round(overhead * 1e3, 3),
            "attempts": span.attempts,
            "inferences": span.inferences,
            "request_bytes": span.request_bytes,
            "response_bytes": span.response_bytes,
            "subject": span.subject[:200] or None,  # who; the token itself is never seen here
            "issuer": span.issuer or None,
            "job_id": (span.job_id or "")[:200] or None,
            "trace_id": span.trace_id or None,
            "reason": span.reason or None,
            "error": span.error[:ERROR_LIMIT] or None,
        }
        access_log.info("inference", extra={"fields": fields})
