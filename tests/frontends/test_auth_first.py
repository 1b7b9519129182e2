"""Every /v2 operation and every gRPC method but the health checks authenticates first (docs/auth.md),
including those the gateway then refuses (model control, trace/log settings, shared memory)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.config import DevIssuerSettings, load_settings
from gateway.frontends.http.app import create_http_app
from tests.support.fake_triton import FakeTriton

OPEN_GRPC = {"ServerLive", "ServerReady"}  # probes (Kubernetes, load balancers) carry no token
OPEN_HTTP = {"/v2/health/live", "/v2/health/ready"}
GARBAGE = b"\x0a\xff\xff"  # not a message: the token is still checked before the bytes are read


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str]]:
    backend = FakeTriton("a")
    await backend.start()
    dev = DevIssuerSettings(enabled=True, key_dir=str(tmp_path / "keys"))
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        backends=[{"facility": "a", "grpc": backend.address}],
        auth={"dev_issuer": dev.model_dump()},
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    yield gateway, DevIssuer(dev).mint("alice")
    await gateway.stop(grace_s=0)
    await backend.stop()


def _grpc_methods() -> list[str]:
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return [m.name for m in service.methods if m.name not in OPEN_GRPC]


async def test_every_grpc_method_but_health_needs_a_token(secured: tuple[Gateway, str]) -> None:
    gateway, token = secured
    methods = _grpc_methods()
    assert len(methods) == 18
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        for name in methods:
            path = f"/inference.GRPCInferenceService/{name}"
            for metadata in ((), (("authorization", "Bearer not-a-token"),)):
                if name == "ModelStreamInfer":
                    call = channel.stream_stream(path)(iter([GARBAGE]), metadata=metadata)
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        async for _ in call:
                            pass
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await channel.unary_unary(path)(GARBAGE, metadata=metadata, timeout=10)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
            # With a good token the refused ones say why (and the others get past authentication).
            code = grpc.StatusCode.OK
            if name != "ModelStreamInfer":
                try:
                    await channel.unary_unary(path)(
                        b"", metadata=(("authorization", f"Bearer {token}"),), timeout=10
                    )
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
            # Past authentication, an empty request is the caller's error, never the gateway's.
            assert code not in (
                grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN
            ), (name, code)
        for name in OPEN_GRPC:
            await channel.unary_unary(f"/inference.GRPCInferenceService/{name}")(b"", timeout=10)


async def test_every_v2_route_but_health_needs_a_token(secured: tuple[Gateway, str]) -> None:
    gateway, token = secured
    app = create_http_app(gateway)
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v2") and path not in OPEN_HTTP
        for method in operations
    ]
    assert len(routes) == 31  # 18 of them only refuse (model control, settings, shared memory)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        for method, path in routes:
            for headers in ({}, {"authorization": "Bearer not-a-token"}):
                r = await client.request(method, path, headers=headers, content=GARBAGE)
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert list(r.json()) == ["error"]
            r = await client.request(method, path, headers={"authorization": f"Bearer {token}"})
            # Past authentication: an answer, model "x" being the caller's error, or 501 from the
            # routes the gateway refuses by design (model control, shared memory); never a failure.
            assert r.status_code < 500 or r.status_code == 501, (method, path, r.status_code)
            assert r.status_code != 401, (method, path)
        for path in OPEN_HTTP:
            assert (await client.get(path)).status_code in (200, 400)
