"""Usage from the fast path: Envoy's usage-log lines -> usage records and metrics.

Envoy appends one JSON line per request the policy filter sent straight to a backend (its dynamic
metadata ``sonic:u``: model, version, subject, issuer and batch, tab-separated; the format is
:func:`gateway.envoy.render.usage_log_format`); :mod:`gateway.envoy.usage_log` follows the file and
hands each line here, which turns each answered request into the same
:class:`~gateway.core.recording.UsageEvent` the Python path records, through the same recorder (same
batching and no-loss rules).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import unquote

import grpc

from gateway.core.recording import UsageEvent, UsageRecorder, decode_tag
from gateway.envoy.render import USAGE_ENTRY, USAGE_FIELDS, decode_name
from gateway.observability.observer import InferenceObserver
from gateway.routing.backend import Backend
from gateway.routing.registry import Snapshot

log = logging.getLogger("gateway.envoy.usage")


class FastPathRequest(NamedTuple):
    """One fast-path request as Envoy logged it (a tuple: one is built per request, cheaply)."""

    protocol: str  # "grpc" | "http"
    model: str
    version: str
    subject: str
    issuer: str
    inferences: int
    upstream: tuple[str, int] | None
    ok: bool
    code: str  # gRPC status name or HTTP status
    error: str  # what the client was told on failure (grpc-message / Envoy's details), else ""
    job_id: str | None
    dataset: str | None
    request_id: str
    request_bytes: int
    response_bytes: int
    duration_s: float
    backend_s: float


_GRPC_CODES = {c.value[0]: c.name for c in grpc.StatusCode}


def _upstream(address: str | None) -> tuple[str, int] | None:
    """``10.0.0.1:8001`` / ``[::1]:8001`` -> (host, port); None when no backend was reached."""
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return (host.strip("[]"), int(port)) if host and port.isdigit() else None


def parse_line(line: bytes) -> FastPathRequest | None:
    """One usage-log line -> :class:`FastPathRequest` (None: not a fast-path inference)."""
    entry: dict[str, Any] = json.loads(line)
    return _request(entry) if entry.get(USAGE_ENTRY) else None


def _usage(entry: dict[str, Any]) -> list[str]:
    """The policy filter's entry: model, version, subject, issuer, batch (USAGE_FIELDS)."""
    fields: list[str] = entry[USAGE_ENTRY].split("\t")
    if len(fields) != len(USAGE_FIELDS) or not fields[0]:
        raise ValueError(f"a usage entry holds {len(fields)} fields, not {len(USAGE_FIELDS)}")
    return fields


def _batch(text: str) -> int:
    return int(text) if text else 0


def _seconds(microseconds: object) -> float:
    """A COMMON_DURATION in microseconds -> seconds (null: the time point was never reached)."""
    return microseconds / 1e6 if isinstance(microseconds, int) else 0.0


def _cancelled(entry: dict[str, Any]) -> bool:
    """The client left before the answer (Envoy's DC flag): not a success, not the backend's failure."""
    return "DC" in (entry.get("flags") or "").split(",")


def _served(entry: dict[str, Any]) -> bool:
    """Answered with success: HTTP 200 and, over gRPC, grpc-status 0 (none: it did not complete)."""
    if entry.get("status") != 200 or _cancelled(entry):
        return False
    return entry.get("protocol") != "grpc" or entry.get("grpc_status") == 0


def _request(entry: dict[str, Any]) -> FastPathRequest:
    model, version, subject, issuer, batch = _usage(entry)
    protocol = entry.get("protocol") or "http"
    ok = _served(entry)
    if _cancelled(entry):
        code = "CANCELLED" if protocol == "grpc" else "499"
    elif protocol == "grpc":
        number = entry.get("grpc_status")
        code = _GRPC_CODES.get(number, "UNKNOWN") if isinstance(number, int) else "UNKNOWN"
    else:
        code = str(entry.get("status") or 0)
    error = ""
    if not ok:
        message = entry.get("grpc_message") or entry.get("grpc_message_headers") or ""
        error = unquote(message) or entry.get("details") or ""
    return FastPathRequest(
        protocol=protocol,
        model=model,
        version=version,
        subject=decode_name(subject),
        issuer=decode_name(issuer),
        inferences=_batch(batch),
        upstream=_upstream(entry.get("upstream")),
        ok=ok,
        code=code,
        error=error,
        job_id=decode_tag(entry.get("job")),
        dataset=decode_tag(entry.get("dataset")),
        request_id=entry.get("request_id") or "",
        request_bytes=entry.get("request_bytes") or 0,
        response_bytes=entry.get("response_bytes") or 0,
        duration_s=_seconds(entry.get("duration_us")),
        backend_s=_seconds(entry.get("backend_us")),
    )


# What answered requests must share to be counted together: every label and usage-record field
# (with the usage entry's model, version, subject and issuer: all of it but the batch).
_GROUP = ("protocol", "upstream", "job", "dataset")


class FastPathTally:
    """Answered fast-path requests with the same labels and record fields, added up."""

    __slots__ = ("first", "inferences", "request_bytes", "requests", "response_bytes", "times")

    def __init__(self, first: FastPathRequest) -> None:
        self.first = first
        self.requests = 1
        self.inferences = first.inferences
        self.request_bytes = first.request_bytes
        self.response_bytes = first.response_bytes
        self.times = [(first.duration_s, first.backend_s)]

    def add(self, entry: dict[str, Any], inferences: int) -> None:
        self.requests += 1
        self.inferences += inferences
        self.request_bytes += entry.get("request_bytes") or 0
        self.response_bytes += entry.get("response_bytes") or 0
        self.times.append((_seconds(entry.get("duration_us")), _seconds(entry.get("backend_us"))))


def served_version(snapshot: Snapshot, backend: Backend, model: str, requested: str) -> str:
    """The version a backend served: the one asked for, else its only (or newest) ready version.

    Envoy does not read the answer's body, so an unversioned request's version comes from what the
    health monitor last saw the backend serve (Triton's default policy serves the newest).
    """
    if requested:
        return requested
    versions = snapshot.health.get(backend.id)
    ready = sorted(versions.models.get(model, frozenset()) if versions else (), key=lambda v: (len(v), v))
    return ready[-1] if ready else ""


class UsageSink:
    """Where the usage log's lines go: usage records (answered requests) and metrics (all).

    Lines come in reads of the log (every 0.5 s): answered requests are added up per labels and
    record fields and recorded once per read (:meth:`flush`), one usage event and one set of metric
    increments per group instead of per request; a failure, or every request when the access log
    wants a line each, is handled on its own.
    """

    def __init__(
        self,
        recorder: UsageRecorder,
        observer: InferenceObserver,
        snapshot: Callable[[], Snapshot],
        backend_at: Callable[[str, int], Backend | None],
    ) -> None:
        self.recorder = recorder
        self.observer = observer
        self._snapshot = snapshot
        self._backend_at = backend_at
        self._tallies: dict[tuple[Any, ...], FastPathTally] = {}

    def line(self, line: bytes) -> None:
        entry: dict[str, Any] = json.loads(line)
        usage: str | None = entry.get(USAGE_ENTRY)
        if not usage:
            return
        if not _served(entry) or self.observer.logs_each():
            self.handle(_request(entry))
            return
        # Same head (all of the usage entry but the batch) as the tally's first, validated, line.
        head, _, batch = usage.rpartition("\t")
        key = (head, *(entry.get(k) for k in _GROUP))
        tally = self._tallies.get(key)
        if tally is None:
            self._tallies[key] = FastPathTally(_request(entry))
        else:
            tally.add(entry, _batch(batch))

    def flush(self) -> None:
        """Record what the lines since the last flush add up to."""
        tallies, self._tallies = self._tallies, {}
        for tally in tallies.values():
            try:
                self._record(tally)
            except Exception:  # one group must not keep the others from being recorded
                log.exception("could not record %d fast-path requests", tally.requests)

    def _record(self, tally: FastPathTally) -> None:
        backend, version = self._served_by(tally.first)
        self.observer.observe_fast_path_served(tally, backend, version)
        self._record_usage(tally.first, backend, version, tally.requests, tally.inferences)

    def handle(self, request: FastPathRequest) -> None:
        backend, version = self._served_by(request)
        self.observer.observe_fast_path(request, backend, version)
        if request.ok:
            self._record_usage(request, backend, version, 1, request.inferences)

    def _served_by(self, request: FastPathRequest) -> tuple[Backend | None, str]:
        """The backend at the upstream address Envoy logged, and the version it served."""
        backend = self._backend_at(*request.upstream) if request.upstream else None
        if backend is None:
            return None, ""
        return backend, served_version(self._snapshot(), backend, request.model, request.version)

    def _record_usage(
        self, request: FastPathRequest, backend: Backend | None, version: str, requests: int, inferences: int
    ) -> None:
        if backend is None:
            log.warning(
                "%d fast-path request(s) (e.g. %s) answered by an unknown upstream %s: not recorded",
                requests,
                request.request_id,
                request.upstream,
            )
            return
        self.recorder.record(
            UsageEvent(
                model=request.model,
                version_requested=request.version,
                version_served=version,
                facility=backend.facility,
                backend_id=backend.id,
                subject=request.subject,
                issuer=request.issuer,
                job_id=request.job_id,
                dataset=request.dataset,
                inferences=inferences,
                requests=requests,
            )
        )
