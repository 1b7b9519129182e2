"""The active health probes, spoken over any backend pool that forwards raw gRPC messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tritonclient.grpc import service_pb2

from gateway.routing.backend import Backend


class RawCaller(Protocol):
    async def call(
        self,
        backend: Backend,
        name: str,
        payload: bytes,
        metadata: Sequence[tuple[str, str | bytes]] = (),
        timeout: float | None = None,
        client_authorization: str | None = None,
    ) -> bytes: ...

    async def server_ready(self, backend: Backend, timeout: float) -> bool: ...

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]: ...


class GrpcProber:
    """ServerReady and RepositoryIndex as the pool does them, plus ModelReady per model version."""

    def __init__(self, pool: RawCaller) -> None:
        self.pool = pool

    async def server_ready(self, backend: Backend, timeout: float) -> bool:
        return await self.pool.server_ready(backend, timeout)

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]:
        return await self.pool.ready_models(backend, timeout)

    async def model_ready(self, backend: Backend, model: str, version: str, timeout: float) -> bool:
        request = service_pb2.ModelReadyRequest(name=model, version=version).SerializeToString()
        raw = await self.pool.call(backend, "ModelReady", request, timeout=timeout)
        return bool(service_pb2.ModelReadyResponse.FromString(raw).ready)
