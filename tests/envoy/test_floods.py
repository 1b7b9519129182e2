"""Floods: thousands of concurrent unary calls on one channel; none may vanish.

Each call is either served or gets a retryable refusal (UNAVAILABLE / RESOURCE_EXHAUSTED) that the
gateway counted; never a silent CANCELLED. Checked on the Envoy path (the product's default) and on
the Python slow path behind it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.envoy.render import SLOW_GRPC, SLOW_HTTP
from gateway.observability.overload import EnvoyOverflowWatch, Refusals, envoy_overflow_stats
from gateway.triton.launcher import TritonServer
from tests.auth.helpers import TestIssuer
from tests.envoy.support import envoy_gateway, serving_jwks
from tests.support.waiting import eventually

pytestmark = pytest.mark.triton

MODEL = "identity_fp32"
CALLS = 3000
RETRYABLE = {"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"}
Edge = tuple[Gateway, TestIssuer]


@pytest.fixture
async def edge(tritons: list[TritonServer], tmp_path: Path) -> AsyncIterator[Edge]:
    issuer = TestIssuer("http://127.0.0.1/issuer")
    with serving_jwks(issuer) as jwks_uri:
        gateway, _ = envoy_gateway(tritons, jwks_uri, issuer, database_url=f"sqlite:///{tmp_path}/c.db")
        await gateway.start()
        try:
            await eventually(
                lambda: bool(gateway.registry.snapshot.candidates(MODEL)), what="backends to become healthy"
            )
            await eventually(lambda: bool(gateway.envoy and gateway.envoy.view.models), what="first push")
            yield gateway, issuer
        finally:
            await gateway.stop(grace_s=1)


def _inputs() -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput("INPUT0", [1, 48, 48, 1], "FP32")
    inp.set_data_from_numpy(np.ones((1, 48, 48, 1), np.float32))
    return [inp]


async def _flood(call: Callable[[], Awaitable[object]]) -> collections.Counter[str]:
    async def one() -> str:
        try:
            await call()
        except InferenceServerException as exc:
            return f"{exc.status()} {(exc.message() or '')[:80]}"
        return "ok"

    started = time.monotonic()
    outcomes = collections.Counter(await asyncio.gather(*(one() for _ in range(CALLS))))
    print(f"{CALLS} calls in {time.monotonic() - started:.1f} s: {dict(outcomes)}")
    return outcomes


def _vanished(outcomes: collections.Counter[str]) -> dict[str, int]:
    return {k: n for k, n in outcomes.items() if k != "ok" and k.split(" ")[0] not in RETRYABLE}


async def test_an_inference_flood_through_envoy_loses_nothing(edge: Edge) -> None:
    gateway, issuer = edge
    headers = {"authorization": f"Bearer {issuer.token()}"}
    inputs = _inputs()
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        await client.infer(MODEL, inputs, headers=headers)  # warm: keys fetched, channel up
        outcomes = await asyncio.wait_for(
            _flood(lambda: client.infer(MODEL, inputs, headers=headers, client_timeout=50)), 55
        )
    assert not _vanished(outcomes), outcomes


async def test_a_slow_path_flood_through_envoy_loses_nothing(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    """ModelMetadata is not a fast-path RPC: every call goes Envoy -> the Python frontend. What
    Envoy's circuit breaker refuses is UNAVAILABLE, counted and logged by the overflow watch."""
    gateway, issuer = edge
    assert gateway.envoy is not None
    process = gateway.envoy.process
    metrics = CollectorRegistry()
    refusals = Refusals(metrics)
    watch = EnvoyOverflowWatch(
        envoy_overflow_stats(process.counters), refusals, {SLOW_GRPC: "grpc", SLOW_HTTP: "http"}
    )
    await watch.poll()  # the baseline
    headers = {"authorization": f"Bearer {issuer.token()}"}
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        await client.get_model_metadata(MODEL, headers=headers)
        outcomes = await asyncio.wait_for(
            _flood(lambda: client.get_model_metadata(MODEL, headers=headers, client_timeout=50)), 55
        )
    assert not _vanished(outcomes), outcomes
    refused = sum(n for k, n in outcomes.items() if k != "ok")
    caplog.set_level(logging.WARNING, "gateway.overload")
    await watch.poll()
    counted = metrics.get_sample_value(
        "sonic_gateway_refused_requests_total", {"frontend": "grpc", "reason": "slow_path_overflow"}
    )
    # Every refusal counted, exactly (Envoy's own calls to the control plane use their own clusters).
    assert (counted or 0) == refused
    if refused:
        lines = [r.getMessage() for r in caplog.records if r.name == "gateway.overload"]
        assert len(lines) == 1, lines
        assert "grpc request(s)" in lines[0]
        assert "sonic_slow_grpc" in lines[0]


async def test_a_flood_of_the_python_frontend_loses_nothing(gateway: Gateway) -> None:
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        await client.get_model_metadata(MODEL)
        outcomes = await asyncio.wait_for(
            _flood(lambda: client.get_model_metadata(MODEL, client_timeout=50)), 55
        )
        inputs = _inputs()
        outcomes += await asyncio.wait_for(_flood(lambda: client.infer(MODEL, inputs, client_timeout=50)), 55)
    assert not _vanished(outcomes), outcomes
