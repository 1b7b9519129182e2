"""gRPC connections to backends: one channel per backend, reused; raw bytes in and out.

This is the edge where grpc's errors become gateway errors (``raise ... from exc``): a request that
never reached the backend becomes :class:`BackendUnreachable` (safe to retry elsewhere), anything
the backend answered is passed through as :class:`BackendError` with its own code and message.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from tritonclient.grpc import service_pb2

from gateway.auth.outbound import BackendCredentials
from gateway.errors import GRPC_TO_HTTP, BackendError, BackendUnreachable, DeadlineExceeded
from gateway.routing.backend import Backend

SERVICE = "/inference.GRPCInferenceService/"
Metadata = Sequence[tuple[str, str | bytes]]

# Fragments grpc-core puts in UNAVAILABLE details when no connection could be made.
_NOT_CONNECTED = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "name resolution",
    "dns resolution failed",
    "socket closed",
)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # A facility that comes back should be used again quickly, not after minutes of backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        # The data plane retries once itself (elsewhere, and only what never arrived); grpc-core's
        # own retries would also keep a copy of every request for a retry it never makes.
        ("grpc.enable_retries", 0),
    ]


def translate_rpc_error(exc: grpc.aio.AioRpcError, backend: Backend) -> Exception:
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and any(f in details.lower() for f in _NOT_CONNECTED):
        return BackendUnreachable(f"backend {backend.id} is unreachable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"backend {backend.id} did not answer within the deadline")
    return BackendError(details, code.name, GRPC_TO_HTTP.get(code.name, 500))


class GrpcBackendPool:
    """Channels and cached method callables, keyed by backend id."""

    def __init__(self, max_message_bytes: int, credentials: BackendCredentials | None = None) -> None:
        self._options = channel_options(max_message_bytes)
        self.credentials = credentials or BackendCredentials()
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._methods: dict[tuple[str, str], grpc.aio.UnaryUnaryMultiCallable] = {}

    def _channel(self, backend: Backend) -> grpc.aio.Channel:
        entry = self._channels.get(backend.id)
        if entry is not None and entry[0] == backend.grpc_address:
            return entry[1]
        channel = grpc.aio.insecure_channel(backend.grpc_address, options=self._options)
        self._channels[backend.id] = (backend.grpc_address, channel)
        self._methods = {k: v for k, v in self._methods.items() if k[0] != backend.id}
        return channel

    def _method(self, backend: Backend, name: str) -> grpc.aio.UnaryUnaryMultiCallable:
        key = (backend.id, name)
        method = self._methods.get(key)
        if method is None:
            # No serializers: the payload stays the bytes the client sent.
            method = self._channel(backend).unary_unary(SERVICE + name)
            self._methods[key] = method
        return method

    async def _with_credential(
        self, backend: Backend, metadata: Metadata, client_authorization: str | None
    ) -> Metadata:
        """``metadata``, plus the ``authorization`` that ``backend``'s facility requires, if any.

        Callers test ``self.credentials.providers`` first: most facilities need no credential, and
        then a call costs no coroutine.
        """
        credential = await self.credentials.authorization_for(backend.id, client_authorization)
        return metadata if credential is None else [*metadata, ("authorization", credential)]

    async def open_stream(
        self,
        backend: Backend,
        name: str,
        metadata: Metadata = (),
        timeout: float | None = None,
        client_authorization: str | None = None,
    ) -> grpc.aio.StreamStreamCall:
        """A bidirectional stream of raw bytes to ``backend``; the caller writes, reads and ends it.

        Its errors are grpc's: the caller translates them with :func:`translate_rpc_error`.
        """
        if self.credentials.providers:
            metadata = await self._with_credential(backend, metadata, client_authorization)
        call: grpc.aio.StreamStreamCall = self._channel(backend).stream_stream(SERVICE + name)(
            metadata=metadata or None, timeout=timeout
        )
        return call

    async def call(
        self,
        backend: Backend,
        name: str,
        payload: bytes,
        metadata: Metadata = (),
        timeout: float | None = None,
        client_authorization: str | None = None,
    ) -> bytes:
        """Send ``payload`` to ``backend``; a facility that requires its own credential gets it."""
        if self.credentials.providers:  # most facilities need no credential: no await per call
            metadata = await self._with_credential(backend, metadata, client_authorization)
        try:
            response: bytes = await self._method(backend, name)(
                payload, metadata=metadata or None, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise translate_rpc_error(exc, backend) from exc
        return response

    async def server_ready(self, backend: Backend, timeout: float) -> bool:
        raw = await self.call(
            backend, "ServerReady", service_pb2.ServerReadyRequest().SerializeToString(), timeout=timeout
        )
        return bool(service_pb2.ServerReadyResponse.FromString(raw).ready)

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]:
        raw = await self.call(
            backend,
            "RepositoryIndex",
            service_pb2.RepositoryIndexRequest(ready=True).SerializeToString(),
            timeout=timeout,
        )
        models: dict[str, set[str]] = {}
        for entry in service_pb2.RepositoryIndexResponse.FromString(raw).models:
            if entry.state == "READY":
                models.setdefault(entry.name, set()).add(entry.version)
        return {name: frozenset(v) for name, v in models.items()}

    async def close(self) -> None:
        for _, channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._methods.clear()
