"""An in-process fake Triton gRPC server with scripted behaviour, for faults and edge cases."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc


@dataclass
class Script:
    """What the fake does; tests change it between calls."""

    models: dict[str, list[str]] = field(default_factory=lambda: {"toy": ["1"]})
    ready: bool = True
    # (model, version) pairs listed in the index but answering ModelReady with ready=false
    unready: set[tuple[str, str]] = field(default_factory=set)
    infer_error: tuple[grpc.StatusCode, str] | None = None
    infer_delay_s: float = 0.0
    seen_metadata: list[dict[str, str]] = field(default_factory=list)
    infer_count: int = 0


class FakeTriton(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, name: str, script: Script | None = None) -> None:
        self.name = name
        self.script = script or Script()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        self.server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.script.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        versions = self.script.models.get(request.name, [])
        version = request.version or (versions[-1] if versions else "")
        ready = version in versions and (request.name, version) not in self.script.unready
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name=f"fake-{self.name}", version="0")

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        out = service_pb2.RepositoryIndexResponse()
        for name, versions in self.script.models.items():
            for version in versions:
                out.models.add(name=name, version=version, state="READY")
        return out

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        self.script.seen_metadata.append(dict(context.invocation_metadata()))
        self.script.infer_count += 1
        if self.script.infer_delay_s:
            await asyncio.sleep(self.script.infer_delay_s)
        if self.script.infer_error is not None:
            await context.abort(*self.script.infer_error)
        return self._served(request)

    def _served(self, request: Any) -> Any:
        """The answer to ``request``: its model's newest version, and which fake served it."""
        response = service_pb2.ModelInferResponse(
            model_name=request.model_name,
            model_version=self.script.models[request.model_name][-1],
            id=request.id,
        )
        out = response.outputs.add(name="SERVED_BY", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(self.name.encode())
        return response

    async def ModelStreamInfer(self, requests: Any, context: Any) -> Any:
        """One answer per request, in request order (Triton's behaviour for non-decoupled models)."""
        self.script.seen_metadata.append(dict(context.invocation_metadata()))
        async for request in requests:
            self.script.infer_count += 1
            if self.script.infer_delay_s:
                await asyncio.sleep(self.script.infer_delay_s)
            if self.script.infer_error is not None:
                yield service_pb2.ModelStreamInferResponse(
                    error_message=self.script.infer_error[1],
                    infer_response=service_pb2.ModelInferResponse(id=request.id),
                )
                continue
            yield service_pb2.ModelStreamInferResponse(infer_response=self._served(request))
