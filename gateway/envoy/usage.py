"""Usage from the fast path: Envoy's gRPC access-log stream -> usage records and metrics.

Envoy logs every request the policy filter sent straight to a backend (dynamic metadata ``sonic``:
model, version, subject, issuer, batch); this service turns each answered one into the same
:class:`~gateway.core.recording.UsageEvent` the Python path records, through the same recorder (same
batching and no-loss rules). Envoy buffers entries while this stream is down and resends nothing, so
the stream is served by the control plane's own gRPC server, which lives as long as Envoy does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NamedTuple
from urllib.parse import unquote

import grpc
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from gateway.core.recording import UsageEvent, UsageRecorder, decode_tag
from gateway.envoy.render import decode_name
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


def _text(struct: Any, key: str) -> str:
    value = struct.fields.get(key)
    return value.string_value if value is not None else ""


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def parse_entry(entry: Any) -> FastPathRequest | None:
    """An ``HTTPAccessLogEntry`` -> :class:`FastPathRequest` (None: not a fast-path inference)."""
    common = entry.common_properties
    sonic = common.metadata.filter_metadata.get("sonic")
    if sonic is None or "model" not in sonic.fields:
        return None
    headers = entry.request.request_headers
    path = entry.request.path
    protocol = "grpc" if path.startswith("/inference.GRPCInferenceService/") else "http"
    cancelled = common.response_flags.downstream_connection_termination
    if cancelled:  # the client left before the answer: not a success, not the backend's failure
        ok, code = False, "CANCELLED" if path.startswith("/inference.") else "499"
    elif protocol == "grpc":
        status = entry.response.response_trailers.get("grpc-status") or entry.response.response_headers.get(
            "grpc-status"
        )
        number = int(status) if status and status.isdigit() else 2  # no status: the call did not complete
        ok, code = (
            number == 0 and entry.response.response_code.value == 200,
            _GRPC_CODES.get(number, "UNKNOWN"),
        )
    else:
        ok, code = entry.response.response_code.value == 200, str(entry.response.response_code.value)
    error = ""
    if not ok:
        trailers, response_headers = entry.response.response_trailers, entry.response.response_headers
        message = trailers.get("grpc-message") or response_headers.get("grpc-message") or ""
        error = unquote(message) or entry.response.response_code_details  # the access log bounds it
    address = common.upstream_remote_address.socket_address
    batch = sonic.fields.get("batch")
    return FastPathRequest(
        protocol=protocol,
        model=_text(sonic, "model"),
        version=_text(sonic, "version"),
        subject=decode_name(_text(sonic, "subject")),
        issuer=decode_name(_text(sonic, "issuer")),
        inferences=int(batch.number_value) if batch is not None else 0,
        upstream=(address.address, address.port_value) if address.address else None,
        ok=ok,
        code=code,
        error=error,
        job_id=decode_tag(headers.get("sonic-job-id")),
        dataset=decode_tag(headers.get("sonic-dataset")),
        request_id=headers.get("x-request-id", "") or entry.request.request_id,
        request_bytes=entry.request.request_body_bytes,
        response_bytes=entry.response.response_body_bytes,
        duration_s=_seconds(common.time_to_last_downstream_tx_byte),
        backend_s=max(
            0.0,
            _seconds(common.time_to_last_upstream_rx_byte) - _seconds(common.time_to_first_upstream_tx_byte),
        ),
    )


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


class UsageService(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    """The access-log service Envoy streams to (registered on the control plane's gRPC server)."""

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
        self.entries = 0

    def handle(self, request: FastPathRequest) -> None:
        backend = self._backend_at(*request.upstream) if request.upstream else None
        version = ""
        if backend is not None:
            version = served_version(self._snapshot(), backend, request.model, request.version)
        self.observer.observe_fast_path(request, backend, version)
        if request.ok and backend is not None:
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
                    inferences=request.inferences,
                )
            )
        elif request.ok:
            log.warning(
                "fast-path request %s answered by an unknown upstream %s: not recorded",
                request.request_id,
                request.upstream,
            )

    async def StreamAccessLogs(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> als_pb2.StreamAccessLogsResponse:
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                self.entries += 1
                try:
                    parsed = parse_entry(entry)
                    if parsed is not None:
                        self.handle(parsed)
                except Exception:  # one odd entry must not end the stream (and lose the rest)
                    log.exception("could not record a fast-path access-log entry")
        return als_pb2.StreamAccessLogsResponse()


def register(server: grpc.aio.Server, service: UsageService) -> None:
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(service, server)
