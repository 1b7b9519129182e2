"""Asking a backend what it serves: ready model versions (RepositoryIndex) and their ModelConfig.

Calls go through the gateway's backend pool, so a facility's outbound credentials apply and grpc's
errors arrive already translated into gateway errors.
"""

from __future__ import annotations

from typing import Protocol

from tritonclient.grpc import model_config_pb2, service_pb2

from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.catalog.consistency import ServedModel, Tensor, datatype
from gateway.routing.backend import Backend


class ModelProbe(Protocol):
    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]: ...

    async def model_config(
        self, backend: Backend, model: str, version: str, timeout: float
    ) -> ServedModel: ...


def _tensors(entries: object) -> tuple[Tensor, ...]:
    return tuple(
        Tensor(t.name, datatype(model_config_pb2.DataType.Name(t.data_type)), tuple(int(d) for d in t.dims))
        for t in entries  # type: ignore[attr-defined]
    )


def served_model(config: model_config_pb2.ModelConfig, version: str) -> ServedModel:
    return ServedModel(
        name=config.name,
        version=version,
        platform=config.platform,
        backend=config.backend,
        max_batch_size=int(config.max_batch_size),
        inputs=_tensors(config.input),
        outputs=_tensors(config.output),
    )


class TritonModelProbe:
    def __init__(self, pool: GrpcBackendPool) -> None:
        self.pool = pool

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]:
        return await self.pool.ready_models(backend, timeout)

    async def model_config(self, backend: Backend, model: str, version: str, timeout: float) -> ServedModel:
        request = service_pb2.ModelConfigRequest(name=model, version=version)
        raw = await self.pool.call(backend, "ModelConfig", request.SerializeToString(), timeout=timeout)
        return served_model(service_pb2.ModelConfigResponse.FromString(raw).config, version)
