"""ModelStreamInfer as ONE bidirectional stream to ONE backend, as a client streaming to Triton sees it.

The caller is authenticated once, when the stream opens. Each request is still checked on its own
(parsed, shared memory refused, model policy, rate limits) and then written, as the client's bytes,
to the backend stream that the first servable request opened on the least-loaded backend serving
its model. The backend's responses come back as it sent them, in its order: Triton answers
non-decoupled requests in request order and sends a decoupled model's responses as they are made.

A request the gateway refuses never reaches the backend; its error is held back until every request
forwarded before it had its first response, so that refusals keep request order too. Requests of a
model seen answering in several parts (decoupled) do not hold refusals back: Triton does not order
those either, and one that never answers would hold them until the stream ends.

Usage is recorded per request, at its first successful response (a decoupled request's later
responses are not counted again); the in-flight load of the backend counts requests still waiting
for their first response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field

import grpc

from gateway.backends.grpc_pool import GrpcBackendPool, translate_rpc_error
from gateway.core.dataplane import CallContext, DataPlane
from gateway.core.identity import Principal
from gateway.core.wire import (
    InferRequestHeader,
    StreamResponseHeader,
    parse_infer_request,
    parse_stream_response,
    stream_error_response,
)
from gateway.errors import BackendError, GatewayError, Unavailable, echo
from gateway.observability.observer import InferenceSpan
from gateway.routing.backend import Backend

log = logging.getLogger(__name__)

METHOD = "ModelStreamInfer"
# Answers queued for a client that reads slowly; beyond this the backend's stream is not read.
_OUT_QUEUE = 64
# Requests still waiting for their first response; beyond this the oldest is given up on (a decoupled
# model may answer a request with nothing at all, and such a stream must not grow without bound).
_MAX_WAITING = 10_000


@dataclass(eq=False)
class _Forwarded:
    header: InferRequestHeader
    span: InferenceSpan
    sent_at: float
    answered: bool = False


@dataclass(eq=False)
class _Refused:
    answer: bytes


@dataclass
class StreamFailure:
    """The stream cannot go on: ``error`` ends it with its status (None: an internal error, logged)."""

    error: GatewayError | None


@dataclass
class _Binding:
    backend: Backend
    call: grpc.aio.StreamStreamCall
    responses: asyncio.Task[None] | None = None
    answered: int = 0
    failed: bool = field(default=False)


class StreamProxy:
    """One client stream; :meth:`run` yields the answers (raw ``ModelStreamInferResponse`` bytes)."""

    def __init__(
        self,
        dataplane: DataPlane,
        pool: GrpcBackendPool,
        ctx: CallContext,
        principal: Principal,
        metadata: list[tuple[str, str]],
        timeout: float | None,
    ) -> None:
        self.dataplane = dataplane
        self.pool = pool
        self.ctx = ctx
        self.principal = principal
        self.metadata = metadata
        self.timeout = timeout
        self._order: deque[_Forwarded | _Refused] = deque()  # what refusals wait behind
        self._waiting: deque[_Forwarded] = deque()  # unanswered, in request order, to pair answers
        self._out: asyncio.Queue[bytes | StreamFailure | None] = asyncio.Queue(_OUT_QUEUE)
        self._binding: _Binding | None = None
        self._decoupled: set[str] = set()  # models seen answering one request in several parts

    async def run(self, requests: AsyncIterator[bytes]) -> AsyncGenerator[bytes | StreamFailure, None]:
        reader = asyncio.create_task(self._guarded(self._read(requests)), name="stream-requests")
        try:
            while (item := await self._out.get()) is not None:
                yield item
                if isinstance(item, StreamFailure):
                    return
        finally:
            reader.cancel()
            binding = self._binding
            if binding is not None:
                if binding.responses is not None:
                    binding.responses.cancel()
                binding.call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                if binding.responses is not None:
                    with contextlib.suppress(asyncio.CancelledError):
                        await binding.responses
            else:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            self._close(binding)

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run a pump; a bug in it ends the stream with INTERNAL instead of leaving the client waiting."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error in ModelStreamInfer")
            await self._out.put(StreamFailure(None))

    # -- requests: checked one by one, written to the one backend stream ------------------------------

    async def _read(self, requests: AsyncIterator[bytes]) -> None:
        async for raw in requests:
            if not await self._forward(raw):
                return  # the backend stream failed; the failure is on its way to the client
        binding = self._binding
        if binding is not None:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await binding.call.done_writing()
            if binding.responses is not None:
                await binding.responses
        else:
            await self._flush(everything=True)
            await self._out.put(None)

    async def _forward(self, raw: bytes) -> bool:
        """Check and send one request; False when the backend stream is gone."""
        span = self.dataplane.observer.inference("grpc", self.ctx, self.metadata)
        span.__enter__()
        span.request_bytes = len(raw)
        request_id = ""
        try:
            header = parse_infer_request(raw)
            request_id = header.request_id
            span.target(header.model_name, header.model_version)
            span.caller(self.principal)
            self.dataplane.authorizer.authorize_infer(self.principal, header.model_name)
            await self.dataplane.admit(self.principal, header.batch_size, len(raw))
            binding = self._binding or await self._bind(header)
            self._check_bound(binding.backend, header)
        except GatewayError as exc:
            span.__exit__(type(exc), exc, None)
            answer = stream_error_response(exc.message, request_id)
            self._order.append(_Refused(answer))
            await self._flush()
            return True
        except BaseException as exc:
            span.__exit__(type(exc), exc, None)
            raise
        entry = _Forwarded(header, span, time.perf_counter())
        self.dataplane.observer.routed(span, binding.backend)
        span.backend = binding.backend
        span.attempts = 1
        self.dataplane.load.acquire(binding.backend.id)
        self._order.append(entry)
        self._waiting.append(entry)
        if len(self._waiting) > _MAX_WAITING:
            self._unanswered(self._waiting.popleft())
        try:
            await binding.call.write(raw)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return False  # the response reader reports why
        return True

    async def _bind(self, header: InferRequestHeader) -> _Binding:
        backend = self.dataplane.route(header.model_name, header.model_version)
        call = await self.pool.open_stream(
            backend, METHOD, self.metadata, self.timeout, self.ctx.authorization
        )
        self.dataplane.breaker.dispatched(backend.id)
        binding = self._binding = _Binding(backend, call)
        binding.responses = asyncio.create_task(
            self._guarded(self._responses(binding)), name="stream-responses"
        )
        return binding

    def _check_bound(self, backend: Backend, header: InferRequestHeader) -> None:
        model, version = header.model_name, header.model_version
        candidates = self.dataplane.registry.snapshot.candidates(model, version)
        if any(b.id == backend.id for b in candidates):
            return
        self.dataplane.check_servable(model, version)  # unknown model: NOT_FOUND, as unary calls say
        raise Unavailable(
            f"model {echo(model)} is not served by facility {backend.facility!r}, which this stream "
            "is bound to (one stream goes to one backend); send it on another stream"
        )

    # -- responses: passed on as the backend sent them -------------------------------------------------

    async def _responses(self, binding: _Binding) -> None:
        call = binding.call
        try:
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    break
                assert isinstance(raw, bytes)
                self._answered(binding, raw)
                await self._out.put(raw)
                await self._flush()
        except grpc.aio.AioRpcError as exc:
            error = translate_rpc_error(exc, binding.backend)
            binding.failed = True
            if isinstance(error, Unavailable) or exc.code() == grpc.StatusCode.UNAVAILABLE:
                self.dataplane.breaker.failed(binding.backend.id, str(error))
            await self._out.put(StreamFailure(error if isinstance(error, GatewayError) else None))
            return
        await self._flush(everything=True)
        await self._out.put(None)

    def _answered(self, binding: _Binding, raw: bytes) -> None:
        """Pair a response with the earliest unanswered request of the same id; record it once."""
        try:
            answer = parse_stream_response(raw)
        except GatewayError:
            answer = StreamResponseHeader()
        if answer.final is False and answer.model_name:
            self._decoupled.add(answer.model_name)
        binding.answered += 1
        entry = next(
            (
                e
                for e in self._waiting
                if e.header.request_id == answer.request_id
                and (not answer.model_name or e.header.model_name == answer.model_name)
            ),
            None,
        )
        if entry is None:
            return  # a decoupled request's later response
        self._waiting.remove(entry)
        entry.answered = True
        self.dataplane.load.release(binding.backend.id)
        span = entry.span
        span.backend_s = time.perf_counter() - entry.sent_at
        if answer.error_message:
            error = BackendError(answer.error_message, "UNKNOWN", 500)
            span.__exit__(BackendError, error, None)
            return
        header = entry.header
        served = answer.model_version
        self.dataplane.record(
            self.ctx, self.principal, binding.backend, header.model_name, header.model_version, served,
            header.batch_size,
        )  # fmt: skip
        span.answered(binding.backend, len(raw), header.batch_size, served)
        span.__exit__(None, None, None)

    async def _flush(self, everything: bool = False) -> None:
        """Send the refusals whose turn has come (all of them when the stream ends)."""
        order = self._order
        while order:
            head = order[0]
            if isinstance(head, _Refused):
                order.popleft()
                await self._out.put(head.answer)
            elif everything or head.answered or head.header.model_name in self._decoupled:
                order.popleft()
            else:
                break
        if everything:
            while self._waiting:
                self._unanswered(self._waiting.popleft())

    def _unanswered(self, entry: _Forwarded) -> None:
        """A request that got no response (a decoupled one that sent none, or cut off): close its books."""
        entry.answered = True
        if self._binding is not None:
            self.dataplane.load.release(self._binding.backend.id)
        entry.span.__exit__(None, None, None)

    def _close(self, binding: _Binding | None) -> None:
        while self._waiting:
            self._unanswered(self._waiting.popleft())
        self._order.clear()
        if binding is not None:
            if binding.failed:
                return
            if binding.answered:
                self.dataplane.breaker.succeeded(binding.backend.id)
            else:
                self.dataplane.breaker.finished(binding.backend.id)
