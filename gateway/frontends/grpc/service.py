"""The complete ``inference.GRPCInferenceService`` as a thin adapter over the data plane.

Payloads stay bytes: handlers are registered without (de)serializers, ModelInfer reads only its
routing header (``gateway.core.wire``) and the backend's answer is returned untouched. Small control
messages (metadata, config, statistics) are decoded with tritonclient's own protos.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import service_pb2

from gateway import __version__
from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.core.dataplane import CallContext, DataPlane, InferenceTarget
from gateway.core.wire import (
    parse_infer_request,
    response_model_version,
)
from gateway.errors import (
    GatewayError,
    InvalidArgument,
    ModelNotFound,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
    status_of,
)
from gateway.frontends.grpc.stream import StreamProxy
from gateway.frontends.statistics import merge_statistics
from gateway.routing.backend import Backend

log = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]
M = TypeVar("M")

# Metadata passed on to the backend; the client's token is not among them (facilities get their own).
_FORWARDED = ("traceparent", "tracestate")


# Status details travel percent-encoded in a header, which clients cap (8 KiB by default): a longer
# message (a backend's echo of a huge name, say) would reach the client as RESOURCE_EXHAUSTED instead.
_MAX_DETAILS_BYTES = 4096


def _bounded(message: str) -> str:
    """``message`` cut so that its grpc-message header stays under ``_MAX_DETAILS_BYTES``."""
    size = 0
    for i, char in enumerate(message):
        # grpc percent-encodes all but printable ASCII (and '%' itself): 3 bytes per UTF-8 byte.
        size += 1 if " " <= char <= "~" and char != "%" else 3 * len(char.encode("utf-8", "replace"))
        if size > _MAX_DETAILS_BYTES - 64:
            return message[:i] + f"... (cut; {len(message)} characters in all)"
    return message


def _decode(message_type: Callable[[bytes], M], raw: bytes) -> M:
    try:
        return message_type(raw)
    except Exception as exc:  # protobuf raises DecodeError and friends for bad bytes
        raise InvalidArgument("malformed request: the message could not be decoded as protobuf") from exc


class InferenceService:
    def __init__(self, dataplane: DataPlane, pool: GrpcBackendPool, default_timeout_s: float) -> None:
        self.dataplane = dataplane
        self.pool = pool
        self.default_timeout_s = default_timeout_s

    # -- plumbing ---------------------------------------------------------------------------------

    def _context(self, context: grpc.aio.ServicerContext) -> tuple[CallContext, list[tuple[str, str]]]:
        authorization = job = dataset = request_id = None
        forwarded: list[tuple[str, str]] = []
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, bytes):
                continue
            if key == "authorization":
                authorization = value
            elif key == "sonic-job-id":
                job = value
            elif key == "sonic-dataset":
                dataset = value
            elif key == "x-request-id":
                request_id = value[:128]
            elif key in _FORWARDED:
                forwarded.append((key, value))
        request_id = request_id or uuid.uuid4().hex
        forwarded.append(("x-request-id", request_id))
        context.set_trailing_metadata((("x-request-id", request_id),))
        return CallContext(authorization, request_id, job, dataset), forwarded

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self.default_timeout_s if remaining is None else min(remaining, self.default_timeout_s)

    def _wrap(self, name: str, fn: Handler) -> Handler:
        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            try:
                return await fn(request, context)
            except GatewayError as exc:
                await self._abort(context, exc)
            except Exception:
                log.exception("internal error in %s", name)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal gateway error in {name}")
            raise AssertionError("unreachable: abort raises")

        return handler

    async def _abort(self, context: grpc.aio.ServicerContext, exc: GatewayError) -> None:
        status = status_of(exc)
        trailing: list[tuple[str, str]] = []
        for key, value in context.trailing_metadata() or ():
            trailing.append((key, value))
        if isinstance(exc, ResourceExhausted) and exc.retry_after_s is not None:
            trailing.append(("retry-after", f"{exc.retry_after_s:.3f}"))
        await context.abort(grpc.StatusCode[status.grpc_code], _bounded(exc.message), tuple(trailing))

    async def _forward_model_call(
        self, name: str, request: bytes, decode: Callable[[bytes], Any], context: grpc.aio.ServicerContext
    ) -> bytes:
        """Authenticate, decode (a message with ``name`` and ``version``), authorize, forward."""
        ctx, metadata = self._context(context)
        principal = await self.dataplane.authenticate(ctx)  # before anything else, decoding included
        msg = _decode(decode, request)
        self.dataplane.authorizer.authorize_infer(principal, msg.name)
        timeout = self._timeout(context)

        async def send(backend: Backend) -> bytes:
            return await self.pool.call(backend, name, request, metadata, timeout, ctx.authorization)

        response: bytes
        response, _ = await self.dataplane.forward(msg.name, msg.version, send)
        return response

    # -- health and server --------------------------------------------------------------------------

    async def server_live(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return bytes(service_pb2.ServerLiveResponse(live=True).SerializeToString())

    async def server_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ready = self.dataplane.ready()
        return bytes(service_pb2.ServerReadyResponse(ready=ready).SerializeToString())

    async def server_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ctx, metadata = self._context(context)
        await self.dataplane.authenticate(ctx)
        backend = self.dataplane.least_loaded_healthy()
        if backend is not None:
            # The facilities' own answer (name, version, extensions), so clients see a Triton.
            try:
                return await self.pool.call(
                    backend, "ServerMetadata", request, metadata, self._timeout(context), ctx.authorization
                )
            except Unavailable:
                pass
        return bytes(
            service_pb2.ServerMetadataResponse(
                name="sonic-gateway", version=__version__, extensions=[]
            ).SerializeToString()
        )

    # -- models -------------------------------------------------------------------------------------

    async def model_ready(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        try:
            return await self._forward_model_call(
                "ModelReady", request, service_pb2.ModelReadyRequest.FromString, context
            )
        except (ModelNotFound, Unavailable):
            return bytes(service_pb2.ModelReadyResponse(ready=False).SerializeToString())

    async def model_metadata(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._forward_model_call(
            "ModelMetadata", request, service_pb2.ModelMetadataRequest.FromString, context
        )

    async def model_config(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await self._forward_model_call(
            "ModelConfig", request, service_pb2.ModelConfigRequest.FromString, context
        )

    async def model_statistics(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ctx, metadata = self._context(context)
        principal = await self.dataplane.authenticate(ctx)
        msg = _decode(service_pb2.ModelStatisticsRequest.FromString, request)
        backends = self.dataplane.statistics_targets(principal, msg.name, msg.version)
        timeout = self._timeout(context)
        answers = await asyncio.gather(
            *(
                self.pool.call(b, "ModelStatistics", request, metadata, timeout, ctx.authorization)
                for b in backends
            ),
            return_exceptions=True,
        )
        good = [service_pb2.ModelStatisticsResponse.FromString(a) for a in answers if isinstance(a, bytes)]
        if not good:
            errors = [a for a in answers if isinstance(a, GatewayError)]
            if errors:
                raise errors[0]
        merged = merge_statistics(good, lambda model: self.dataplane.may_use(principal, model))
        return bytes(merged.SerializeToString())

    async def repository_index(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ctx, _ = self._context(context)
        await self.dataplane.authenticate(ctx)
        msg = _decode(service_pb2.RepositoryIndexRequest.FromString, request)
        index = service_pb2.RepositoryIndexResponse()
        for entry in self.dataplane.repository_index():
            if msg.ready and not entry.ready:
                continue
            index.models.add(
                name=entry.name,
                version=entry.version,
                state="READY" if entry.ready else "UNAVAILABLE",
                reason="" if entry.ready else "no healthy backend serves this version now",
            )
        return bytes(index.SerializeToString())

    # -- inference ----------------------------------------------------------------------------------

    async def _infer(
        self, request: bytes, ctx: CallContext, metadata: list[tuple[str, str]], timeout: float
    ) -> bytes:
        with self.dataplane.observer.inference("grpc", ctx, metadata) as span:
            span.request_bytes = len(request)
            principal = await self.dataplane.authenticate(ctx)  # before anything else, parsing included
            span.caller(principal)
            header = parse_infer_request(request)
            span.target(header.model_name, header.model_version)
            # One deadline for all attempts: a failover retry gets what is left, not a fresh timeout.
            deadline = time.monotonic() + timeout

            async def send(backend: Backend) -> bytes:
                remaining = max(deadline - time.monotonic(), 0.001)
                return await self.pool.call(
                    backend, "ModelInfer", request, metadata, remaining, ctx.authorization
                )

            target = InferenceTarget(header.model_name, header.model_version, header.batch_size, len(request))
            response, backend, served = await self.dataplane.infer(
                ctx, principal, target, span.timed(send),
                protocol="grpc", deadline=deadline, served_version=response_model_version,
            )  # fmt: skip
            span.answered(backend, len(response), header.batch_size, served)
            return response

    async def model_infer(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        ctx, metadata = self._context(context)
        return await self._infer(request, ctx, metadata, self._timeout(context))

    async def model_stream_infer(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """One bidirectional stream to one backend (see :mod:`gateway.frontends.grpc.stream`).

        A bad token ends the stream before anything is forwarded; errors of one request travel as
        ``error_message`` in the stream (as Triton does) and do not end it.
        """
        ctx, metadata = self._context(context)
        try:
            principal = await self.dataplane.authenticate(ctx)
        except GatewayError as exc:
            await self._abort(context, exc)
        proxy = StreamProxy(self.dataplane, self.pool, ctx, principal, metadata, context.time_remaining())
        async with contextlib.aclosing(proxy.run(requests)) as answers:
            async for answer in answers:
                if isinstance(answer, bytes):
                    yield answer
                elif answer.error is not None:
                    await self._abort(context, answer.error)
                else:
                    await context.abort(
                        grpc.StatusCode.INTERNAL, "internal gateway error in ModelStreamInfer"
                    )

    # -- what a remote gateway cannot offer -----------------------------------------------------------

    async def _no_model_control(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise Unimplemented(
            "loading and unloading models is done by each facility's operators; "
            "ask a gateway admin to register the deployment instead"
        )

    async def _shm_status(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""  # no regions are ever registered: an empty status message

    async def _shm_register(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise Unimplemented(
            "shared memory cannot cross the network between a job and a remote facility; "
            "send the tensors in the request instead"
        )

    async def _shm_unregister(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b""  # nothing registered, so unregistering succeeds trivially

    async def _facility_settings(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise Unimplemented(
            "trace and log settings belong to each facility's Triton server; ask its operator"
        )

    def _authenticated(self, fn: Handler) -> Handler:
        """Authenticate first, as every call but the health checks does, even one that is refused."""

        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            ctx, _ = self._context(context)
            await self.dataplane.authenticate(ctx)
            return await fn(request, context)

        return handler

    def generic_handler(self) -> grpc.GenericRpcHandler:
        unary: dict[str, Handler] = {
            "ServerLive": self.server_live,
            "ServerReady": self.server_ready,
            "ServerMetadata": self.server_metadata,
            "ModelReady": self.model_ready,
            "ModelMetadata": self.model_metadata,
            "ModelConfig": self.model_config,
            "ModelStatistics": self.model_statistics,
            "RepositoryIndex": self.repository_index,
            "ModelInfer": self.model_infer,
            "RepositoryModelLoad": self._authenticated(self._no_model_control),
            "RepositoryModelUnload": self._authenticated(self._no_model_control),
            "SystemSharedMemoryStatus": self._authenticated(self._shm_status),
            "SystemSharedMemoryRegister": self._authenticated(self._shm_register),
            "SystemSharedMemoryUnregister": self._authenticated(self._shm_unregister),
            "CudaSharedMemoryStatus": self._authenticated(self._shm_status),
            "CudaSharedMemoryRegister": self._authenticated(self._shm_register),
            "CudaSharedMemoryUnregister": self._authenticated(self._shm_unregister),
            "TraceSetting": self._authenticated(self._facility_settings),
            "LogSettings": self._authenticated(self._facility_settings),
        }
        handlers: dict[str, Any] = {
            name: grpc.unary_unary_rpc_method_handler(self._wrap(name, fn)) for name, fn in unary.items()
        }
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(self.model_stream_infer)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
