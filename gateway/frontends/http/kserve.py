"""KServe v2 REST (with Triton's binary-tensor extension) as a thin adapter over the data plane.

Bodies stay bytes: the request is forwarded as the client sent it (JSON, binary tensors, gzip or
deflate alike) and the backend's answer is returned untouched. Only the URL path (model name and
version) decides routing; for usage records the small JSON header part is scanned for the batch size
and the served version. Auth, policy, routing and retry are the core's (:class:`DataPlane`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from google.protobuf.json_format import MessageToDict, ParseDict
from tritonclient.grpc import service_pb2

from gateway import __version__
from gateway.auth import www_authenticate
from gateway.backends.http_pool import BackendResponse, HttpBackendPool
from gateway.core.dataplane import CallContext, DataPlane, InferenceTarget
from gateway.errors import (
    ClientGone,
    GatewayError,
    ModelNotFound,
    PayloadTooLarge,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    status_of,
)
from gateway.frontends.http.infer_body import checked_batch_size, served_version
from gateway.frontends.statistics import merge_statistics
from gateway.observability.observer import ERROR_LIMIT
from gateway.routing.backend import Backend

log = logging.getLogger(__name__)
T = TypeVar("T")

# Client headers passed on to the backend; ``authorization`` is never among them.
_FORWARDED = (
    "content-type",
    "inference-header-content-length",
    "content-encoding",
    "accept-encoding",
    "traceparent",
    "tracestate",
)
# Backend headers returned to the client.
_RETURNED = ("content-type", "inference-header-content-length", "content-encoding")
_HEADER_LENGTH = "inference-header-content-length"


def error_response(exc: GatewayError) -> Response:
    """Triton's error shape ``{"error": "..."}`` with the status of THE table (gateway.errors)."""
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthenticated | PermissionDenied):
        headers["www-authenticate"] = www_authenticate(exc)
    if isinstance(exc, ResourceExhausted) and exc.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_s)))  # whole seconds (RFC 9110)
    return Response(
        json.dumps({"error": exc.message}),
        status_code=status_of(exc).http_status,
        media_type="application/json",
        headers=headers,
    )


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value), status_code=status, media_type="application/json")


# How often a long REST inference checks that its client is still there.
DISCONNECT_POLL_S = 0.25


async def _unless_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """``work``, cancelled as soon as the client disconnects: a backend call nobody will read is
    freed (HTTP has no cancellation of its own; gRPC cancels the handler itself)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone("the client disconnected before the answer; its request was cancelled")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


def _error_text(body: bytes) -> str:
    """A backend's error answer as text for the access log (Triton's ``{"error": ...}`` shape)."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, AttributeError):
        message = None
    # The access log cuts it to ERROR_LIMIT; only a bounded prefix of a non-JSON body is decoded.
    return message if isinstance(message, str) else body[:ERROR_LIMIT].decode("utf-8", "replace")


def _relay(answer: BackendResponse, request_id: str) -> Response:
    headers = {k: answer.headers[k] for k in _RETURNED if k in answer.headers}
    headers["x-request-id"] = request_id
    media = headers.pop("content-type", None)
    return Response(answer.body, status_code=answer.status, headers=headers, media_type=media)


def _numbers(value: Any) -> Any:
    """MessageToDict writes 64-bit integers as strings; Triton's REST JSON has numbers."""
    if isinstance(value, dict):
        return {k: v if k in ("name", "version") else _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


class KServeHttp:
    def __init__(
        self, dataplane: DataPlane, pool: HttpBackendPool, default_timeout_s: float, max_body_bytes: int
    ) -> None:
        self.dataplane = dataplane
        self.pool = pool
        self.timeout_s = default_timeout_s
        self.max_body_bytes = max_body_bytes

    # -- plumbing ---------------------------------------------------------------------------------

    def context(self, request: Request) -> tuple[CallContext, list[tuple[str, str]]]:
        h = request.headers
        request_id = (h.get("x-request-id") or "")[:128] or uuid.uuid4().hex
        request.state.request_id = request_id  # error answers carry it too (see _guard)
        forwarded = [(k, h[k]) for k in _FORWARDED if k in h]
        forwarded.append(("x-request-id", request_id))
        ctx = CallContext(h.get("authorization"), request_id, h.get("sonic-job-id"), h.get("sonic-dataset"))
        return ctx, forwarded

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 before reading when Content-Length (or the count so far) is too big."""
        limit = self.max_body_bytes
        advice = (
            f"the request body exceeds the gateway's limit of {limit} bytes "
            f"(routing.max_http_body_bytes); split the request into smaller batches"
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(advice)
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(advice)
            chunks.append(chunk)
        return b"".join(chunks)

    async def model_call(
        self, request: Request, model: str, version: str, suffix: str
    ) -> tuple[BackendResponse, CallContext]:
        """A model-level GET (metadata, config, ready) for a caller allowed to use the model."""
        ctx, headers = self.context(request)
        await self.dataplane.authorize_model(ctx, model)
        send, deadline = self._sender(request, model, version, "GET", suffix, None, ctx, headers)
        answer, _ = await self.dataplane.forward(
            model, version, send, protocol="http", deadline=deadline, unavailable=_unavailable
        )
        return answer, ctx

    def _sender(
        self,
        request: Request,
        model: str,
        version: str,
        method: str,
        suffix: str,
        body: bytes | None,
        ctx: CallContext,
        headers: list[tuple[str, str]],
    ) -> tuple[Callable[[Backend], Awaitable[BackendResponse]], float]:
        """How to send this call to a backend, and the deadline that bounds all attempts."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + suffix
        if request.url.query:
            path += "?" + request.url.query
        # HTTP has no standard deadline header: the client's sonic-timeout-ms (sonic_client sends it)
        # or else the gateway's timeout bounds all attempts together.
        budget = self.timeout_s
        asked = request.headers.get("sonic-timeout-ms", "")
        if asked.isdigit() and int(asked) > 0:
            budget = min(budget, int(asked) / 1000)
        deadline = time.monotonic() + budget

        async def send(backend: Backend) -> BackendResponse:
            return await self.pool.request(
                backend,
                method,
                path,
                content=body,
                headers=headers,
                timeout=max(deadline - time.monotonic(), 0.001),
                client_authorization=ctx.authorization,
            )

        return send, deadline

    # -- endpoints --------------------------------------------------------------------------------

    async def server_metadata(self, request: Request) -> Response:
        ctx, headers = self.context(request)
        await self.dataplane.authenticate(ctx)
        backend = self.dataplane.least_loaded_healthy("http")
        if backend is not None:
            try:
                answer = await self.pool.request(
                    backend,
                    "GET",
                    "/v2",
                    headers=headers,
                    timeout=self.timeout_s,
                    client_authorization=ctx.authorization,
                )
                if answer.status == 200:
                    return _relay(answer, ctx.request_id)
            except Unavailable:
                pass
        return _json({"name": "sonic-gateway", "version": __version__, "extensions": []})

    async def model(self, request: Request, model: str, version: str, suffix: str) -> Response:
        answer, ctx = await self.model_call(request, model, version, suffix)
        return _relay(answer, ctx.request_id)

    async def model_ready(self, request: Request, model: str, version: str) -> Response:
        try:
            answer, ctx = await self.model_call(request, model, version, "/ready")
        except (ModelNotFound, Unavailable) as exc:
            return Response(json.dumps({"error": exc.message}), 400, media_type="application/json")
        return _relay(answer, ctx.request_id)

    async def infer(self, request: Request, model: str, version: str) -> Response:
        h = request.headers
        ctx, headers = self.context(request)
        with self.dataplane.observer.inference("http", ctx, headers) as span:
            span.target(model, version)
            principal = await self.dataplane.authorize_model(ctx, model, span)  # before reading the body
            self.dataplane.check_servable(model, version, "http")
            body = await self.read_body(request)
            span.request_bytes = len(body)
            header_length, encoding = h.get(_HEADER_LENGTH), h.get("content-encoding")
            items = checked_batch_size(body, header_length, encoding, self.max_body_bytes)  # refuses shm
            send, deadline = self._sender(request, model, version, "POST", "/infer", body, ctx, headers)

            def served(answer: BackendResponse) -> str | None:
                if answer.status != 200:
                    return None  # an error passed through: no usage
                return served_version(
                    answer.body, answer.headers.get(_HEADER_LENGTH), answer.headers.get("content-encoding")
                )

            answer, backend, version_served = await _unless_client_leaves(request, self.dataplane.infer(
                ctx, principal, InferenceTarget(model, version, items, len(body)), span.timed(send),
                protocol="http", deadline=deadline, served_version=served, unavailable=_unavailable,
            ))  # fmt: skip
            error = "" if answer.status == 200 else _error_text(answer.body)
            span.answered(backend, len(answer.body), items, version_served, answer.status, error=error)
            return _relay(answer, ctx.request_id)

    async def statistics(self, request: Request, model: str, version: str) -> Response:
        """Statistics merged across the backends (as the gRPC frontend does), in Triton's JSON."""
        ctx, headers = self.context(request)
        principal = await self.dataplane.authenticate(ctx)
        backends = self.dataplane.statistics_targets(principal, model, version, "http")
        path = (
            f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats"
            if model
            else "/v2/models/stats"
        )
        plain = [(k, v) for k, v in headers if k != "accept-encoding"]  # merged here: plain JSON wanted
        auth = ctx.authorization
        answers = await asyncio.gather(
            *(
                self.pool.request(
                    b, "GET", path, headers=plain, timeout=self.timeout_s, client_authorization=auth
                )
                for b in backends
            ),
            return_exceptions=True,
        )
        good = []
        for answer in answers:
            if isinstance(answer, BackendResponse) and answer.status == 200:
                message = service_pb2.ModelStatisticsResponse()
                ParseDict(json.loads(answer.body), message, ignore_unknown_fields=True)
                good.append(message)
        if not good:
            for answer in answers:
                if isinstance(answer, BackendResponse):
                    return _relay(answer, ctx.request_id)
                if isinstance(answer, GatewayError):
                    raise answer
        merged = merge_statistics(good, lambda name: self.dataplane.may_use(principal, name))
        # Zero counters and empty lists stay, as Triton writes them: clients index into them.
        out = MessageToDict(
            merged, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return _json(_numbers(out))

    async def repository_index(self, request: Request) -> Response:
        ctx, _ = self.context(request)
        await self.dataplane.authenticate(ctx)
        raw = await request.body()
        ready_only = False
        if raw.strip():
            try:
                ready_only = bool(json.loads(raw).get("ready", False))
            except (ValueError, AttributeError):
                ready_only = False
        index = []
        for entry in self.dataplane.repository_index("http"):
            if ready_only and not entry.ready:
                continue
            item = {
                "name": entry.name,
                "version": entry.version,
                "state": "READY" if entry.ready else "UNAVAILABLE",
            }
            if not entry.ready:
                item["reason"] = "no healthy backend with an HTTP endpoint serves this version now"
            index.append(item)
        return _json(index)


def _guard(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    @functools.wraps(fn)
    async def handler(*args: Any, **kwargs: Any) -> Response:
        try:
            return await fn(*args, **kwargs)
        except GatewayError as exc:
            return _with_request_id(error_response(exc), kwargs.get("request"))
        except Exception:
            log.exception("internal error in %s", getattr(fn, "__name__", "handler"))
            return _with_request_id(_json({"error": "internal gateway error"}, 500), kwargs.get("request"))

    return handler


def _unavailable(answer: BackendResponse) -> bool:
    """A backend's 503 is passed to the client as it came, and counts against the backend's circuit."""
    return answer.status == 503


def _with_request_id(response: Response, request: Request | None) -> Response:
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    if request_id:
        response.headers["x-request-id"] = request_id
    return response


def kserve_router(api: KServeHttp) -> APIRouter:
    """The ``/v2`` routes (health live/ready stay in ``app.py``)."""
    router = APIRouter(tags=["kserve-v2"])

    async def not_offered_model_control(request: Request, model: str = "") -> Response:
        raise Unimplemented(
            "loading and unloading models is done by each facility's operators; "
            "ask a gateway admin to register the deployment instead"
        )

    async def not_offered_settings(request: Request, model: str = "") -> Response:
        raise Unimplemented(
            "trace and log settings belong to each facility's Triton server; ask its operator"
        )

    async def shm_status(request: Request, region: str = "") -> Response:
        return _json([])  # no region is ever registered

    async def shm_register(request: Request, region: str = "") -> Response:
        raise Unimplemented(
            "shared memory cannot cross the network between a job and a remote facility; "
            "send the tensors in the request instead"
        )

    async def shm_unregister(request: Request, region: str = "") -> Response:
        return Response(status_code=200)  # nothing registered: unregistering succeeds trivially

    def add(path: str, fn: Callable[..., Awaitable[Response]], method: str = "GET") -> None:
        router.add_api_route(path, _guard(fn), methods=[method], response_class=Response)

    def authenticated(fn: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        """Authenticate first, as every /v2 call but the health checks does, even one refused."""

        @functools.wraps(fn)
        async def handler(request: Request, **params: str) -> Response:
            ctx, _ = api.context(request)
            await api.dataplane.authenticate(ctx)
            return await fn(request, **params)

        return handler

    # Handlers take plain path parameters; bodies are read by hand (FastAPI must not parse them).
    async def server_metadata(request: Request) -> Response:
        return await api.server_metadata(request)

    async def all_stats(request: Request) -> Response:
        return await api.statistics(request, "", "")

    async def model_meta(request: Request, model: str, version: str = "") -> Response:
        return await api.model(request, model, version, "")

    async def model_config(request: Request, model: str, version: str = "") -> Response:
        return await api.model(request, model, version, "/config")

    async def model_ready(request: Request, model: str, version: str = "") -> Response:
        return await api.model_ready(request, model, version)

    async def model_stats(request: Request, model: str, version: str = "") -> Response:
        return await api.statistics(request, model, version)

    async def model_infer(request: Request, model: str, version: str = "") -> Response:
        return await api.infer(request, model, version)

    async def repository_index(request: Request) -> Response:
        return await api.repository_index(request)

    add("/v2", server_metadata)
    add("/v2/models/stats", all_stats)
    add("/v2/repository/index", repository_index, "POST")
    add("/v2/repository/models/{model}/load", authenticated(not_offered_model_control), "POST")
    add("/v2/repository/models/{model}/unload", authenticated(not_offered_model_control), "POST")
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        add(prefix, model_meta)
        add(prefix + "/config", model_config)
        add(prefix + "/ready", model_ready)
        add(prefix + "/stats", model_stats)
        add(prefix + "/infer", model_infer, "POST")
    settings = authenticated(not_offered_settings)
    for method in ("GET", "POST"):
        add("/v2/trace/setting", settings, method)
        add("/v2/models/{model}/trace/setting", settings, method)
        add("/v2/logging", settings, method)
    status, register, unregister = map(authenticated, (shm_status, shm_register, shm_unregister))
    for kind in ("systemsharedmemory", "cudasharedmemory"):
        add(f"/v2/{kind}/status", status)
        add(f"/v2/{kind}/region/{{region}}/status", status)
        add(f"/v2/{kind}/region/{{region}}/register", register, "POST")
        add(f"/v2/{kind}/unregister", unregister, "POST")
        add(f"/v2/{kind}/region/{{region}}/unregister", unregister, "POST")
    return router
