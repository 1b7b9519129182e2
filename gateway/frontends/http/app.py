"""The HTTP frontend: health, metrics (and, as they land, KServe v2 REST and the admin API).

Built by :func:`create_http_app` from a running :class:`~gateway.app.Gateway`; resources are injected
through FastAPI dependencies, never created at import time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException

from gateway import __version__
from gateway.catalog.api import install_admin_api
from gateway.frontends.http.kserve import KServeHttp, kserve_router

if TYPE_CHECKING:
    from gateway.app import Gateway


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated["Gateway", Depends(get_gateway)]


async def _triton_error_shape(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods answer as Triton does: ``{"error": "Not Found"}`` (not
    FastAPI's ``{"detail": ...}``); ``/api`` keeps FastAPI's own handling."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return await http_exception_handler(request, exc)
    return Response(
        json.dumps({"error": exc.detail}),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )


def create_http_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="SONIC Gateway",
        version=__version__,
        description="Federated, authenticated inference gateway for Triton (KServe v2 protocol).",
    )
    app.state.gateway = gateway
    app.add_exception_handler(HTTPException, _triton_error_shape)

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> Response:
        return Response(status_code=200)

    @app.get("/v2/health/ready", tags=["health"])
    async def ready(gw: GatewayDep) -> Response:
        return Response(status_code=200 if gw.dataplane.ready() else 400)

    routing = gateway.settings.routing
    kserve = KServeHttp(
        gateway.dataplane, gateway.http_pool, routing.default_timeout_s, routing.max_http_body_bytes
    )
    app.include_router(kserve_router(kserve))
    install_admin_api(app)  # /api/v1: admin and catalog
    return app
