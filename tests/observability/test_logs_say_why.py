"""Logs say why: a dead or hung backend is a WARNING naming the cause; refused requests' access-log
lines carry the error the client was told (401: why the token was refused, never the token)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as tg
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.backends.grpc_pool import GrpcBackendPool
from gateway.config import load_settings
from gateway.routing.backend import Backend
from gateway.routing.health import HealthMonitor
from gateway.routing.probes import GrpcProber
from gateway.routing.registry import Registry
from tests.support.fake_triton import FakeTriton
from tests.support.net import free_port


def _warnings(caplog: pytest.LogCaptureFixture, backend_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.routing.health"
        and r.levelno == logging.WARNING
        and backend_id in r.getMessage()
    ]


def _monitor(backend: Backend, timeout_s: float = 2) -> tuple[Registry, GrpcBackendPool, HealthMonitor]:
    """A monitor of ``backend`` alone whose probes the test calls (the caller closes the pool)."""
    registry = Registry([backend])
    pool = GrpcBackendPool(1 << 20)
    return registry, pool, HealthMonitor(registry, GrpcProber(pool), interval_s=10, timeout_s=timeout_s)


async def test_a_killed_backend_is_a_warning_even_after_the_data_path_ejected_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTriton("a")
    await fake.start()
    backend = Backend(id="a", facility="a", grpc_address=fake.address)
    registry, pool, monitor = _monitor(backend)
    caplog.set_level(logging.INFO)
    try:
        await monitor.probe(backend)
        assert registry.snapshot.health["a"].healthy
        assert not _warnings(caplog, "a")
        await fake.stop()  # killed
        # Under traffic the data path notices first and takes it out of routing (passive health).
        registry.mark_unreachable("a", "backend a is unreachable: connection refused")
        await monitor.probe(backend)
        warnings = _warnings(caplog, "a")
        assert len(warnings) == 1, warnings
        assert "failed its health check" in warnings[0]
        # Why, as gRPC saw it: refused, or the server's GOAWAY if the probe raced its shutdown.
        assert "unreachable" in warnings[0] or "GOAWAY" in warnings[0]
        await monitor.probe(backend)  # still down: one WARNING per outage, not one per probe
        assert len(_warnings(caplog, "a")) == 1
    finally:
        await pool.close()
        await fake.stop()


async def test_a_backend_dead_from_the_start_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    backend = Backend(id="gone", facility="x", grpc_address=f"127.0.0.1:{free_port()}")  # closed port
    _, pool, monitor = _monitor(backend)
    caplog.set_level(logging.INFO)
    try:
        await monitor.probe(backend)
    finally:
        await pool.close()
    warnings = _warnings(caplog, "gone")
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0]


class _Hung(FakeTriton):
    """Speaks HTTP/2 and takes calls, answers none (a SIGSTOPped Triton keeps its connections)."""

    async def ServerReady(self, request: Any, context: Any) -> Any:
        await asyncio.Event().wait()


@pytest.mark.parametrize("hang", ["socket", "grpc"])
async def test_a_hung_backend_warning_names_the_timeout(hang: str, caplog: pytest.LogCaptureFixture) -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, reads nothing, answers nothing

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    hung = _Hung("hung")
    await hung.start()
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}" if hang == "socket" else hung.address
    backend = Backend(id="hung", facility="x", grpc_address=address)
    registry, pool, monitor = _monitor(backend, timeout_s=0.3)
    caplog.set_level(logging.INFO)
    try:
        started = time.monotonic()
        await monitor.probe(backend)
        assert time.monotonic() - started < 5
    finally:
        await pool.close()
        await hung.stop()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    warnings = _warnings(caplog, "hung")
    assert len(warnings) == 1, warnings
    assert "timeout of 0.3 s" in warnings[0], warnings
    assert "timeout of 0.3 s" in registry.snapshot.health["hung"].last_error


# -- access-log lines of refused requests ---------------------------------------------------------


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Gateway, FakeTriton, DevIssuer]]:
    fake = FakeTriton("a")
    await fake.start()
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        backends=[{"facility": "a", "grpc": fake.address}],
        routing={"health_interval_s": 60},
        auth={"dev_issuer": {"enabled": True, "key_dir": str(tmp_path / "keys")}},
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        yield gateway, fake, DevIssuer(settings.auth.dev_issuer)
    finally:
        await gateway.stop(grace_s=0)
        await fake.stop()


def _access(caplog: pytest.LogCaptureFixture, request_id: str) -> dict[str, object]:
    lines = [
        r.__dict__["fields"]
        for r in caplog.records
        if r.name == "gateway.access" and r.__dict__.get("fields", {}).get("request_id") == request_id
    ]
    assert len(lines) == 1, lines
    fields = lines[0]
    assert isinstance(fields, dict)
    return fields


async def test_refused_requests_log_why(
    secured: tuple[Gateway, FakeTriton, DevIssuer], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, _, issuer = secured
    caplog.set_level(logging.INFO)
    expired = issuer.mint("alice", lifetime_s=60, now=time.time() - 3600)
    good = issuer.mint("alice")
    inp = tg.InferInput("x", [2], "FP32")
    inp.set_data_from_numpy(np.ones(2, np.float32))
    async with tg.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        for request_id, model, token in (
            ("r-expired", "toy", expired),
            ("r-unknown", "no_such_model", good),
        ):
            headers = {"authorization": f"Bearer {token}", "x-request-id": request_id}
            with pytest.raises(InferenceServerException) as err:
                await client.infer(model, [inp], headers=headers)
            told = err.value.message() or ""
            line = _access(caplog, request_id)
            assert line["error"], line
            assert str(line["error"]) in told, (line, told)
        # A request with no model name: 400, and the line says what was wrong.
        headers = {"authorization": f"Bearer {good}", "x-request-id": "r-bad"}
        with pytest.raises(InferenceServerException) as err:
            await client.infer("", [inp], headers=headers)
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        bad = _access(caplog, "r-bad")
        assert bad["status"] == 400
        assert bad["error"]
        assert str(bad["error"]) in (err.value.message() or "")

    refused = _access(caplog, "r-expired")
    assert (refused["status"], refused["reason"]) == (401, "expired")
    assert "expired" in str(refused["error"])
    missing = _access(caplog, "r-unknown")
    assert missing["status"] == 404
    assert "no_such_model" in str(missing["error"])
    # The authenticator's own line says why too; no line anywhere holds a token.
    auth = [r.getMessage() for r in caplog.records if r.name == "gateway.auth"]
    assert any("token rejected (expired)" in m for m in auth), auth
    text = caplog.text + repr([r.__dict__.get("fields") for r in caplog.records])
    assert expired not in text
    assert good not in text
