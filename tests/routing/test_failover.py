"""Routing end to end: controlled fake backends, and a real Triton killed mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.config import load_settings
from gateway.triton.launcher import TritonPorts, TritonServer
from tests.conftest import REPO, gateway_settings
from tests.support.fake_triton import FakeTriton
from tests.support.net import free_port


async def _gateway(addresses: list[str], **routing: object) -> Gateway:
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        backends=[{"facility": f"f{i}", "grpc": a} for i, a in enumerate(addresses)],
        routing={"health_interval_s": 60, **routing},
        auth={"enabled": False},
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    return gateway


def _toy_inputs() -> list[tc.InferInput]:
    x = np.zeros((1, 2), np.float32)
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


@pytest.fixture
async def fast_and_slow() -> AsyncIterator[tuple[FakeTriton, FakeTriton]]:
    fast, slow = FakeTriton("fast"), FakeTriton("slow")
    fast.script.infer_delay_s, slow.script.infer_delay_s = 0.01, 0.04
    for f in (fast, slow):
        await f.start()
    yield fast, slow
    for f in (fast, slow):
        await f.stop()


async def test_the_fast_backend_gets_proportionally_more_load(
    fast_and_slow: tuple[FakeTriton, FakeTriton],
) -> None:
    fast, slow = fast_and_slow
    gateway = await _gateway([fast.address, slow.address])
    stop_at = time.monotonic() + 1.5
    try:
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:

            async def loop() -> None:
                while time.monotonic() < stop_at:
                    await client.infer("toy", _toy_inputs())

            await asyncio.gather(*(loop() for _ in range(8)))
    finally:
        await gateway.stop(grace_s=0)
    # In-flight counts even out, so throughput follows speed: 4x in theory, overheads blur it.
    assert fast.script.infer_count > 2 * slow.script.infer_count > 0


async def test_a_failing_backend_is_ejected_then_comes_back_after_recovery() -> None:
    good, bad = FakeTriton("good"), FakeTriton("bad")
    for f in (good, bad):
        await f.start()
    bad.script.infer_error = (grpc.StatusCode.UNAVAILABLE, "server is shutting down")
    # The ejection (the Gateway's real clock) must outlast 20 in-process requests by far: 1 s.
    gateway = await _gateway(
        [good.address, bad.address], circuit_failure_threshold=2, circuit_base_ejection_s=1.0
    )
    bad_id = next(b for b in gateway.registry.snapshot.backends if b.startswith("f1/"))
    try:
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            while bad.script.infer_count < 2:
                # Each UNAVAILABLE answer is retried once on the good backend: the client sees none.
                result = await client.infer("toy", _toy_inputs())
                assert result.as_numpy("SERVED_BY")[0] == b"good"
            # Ejected (health probes still say ready): nothing reaches it.
            for _ in range(20):
                await client.infer("toy", _toy_inputs())
            assert gateway.breaker.ejected(bad_id), "the ejection ended before the requests did"
            assert bad.script.infer_count == 2
            bad.script.infer_error = None  # recovered
            # Wait out exactly the ejection the state holds, not a guessed window.
            await asyncio.sleep(max(0.0, gateway.load.ejected_until(bad_id) - time.monotonic()))
            for _ in range(40):
                await client.infer("toy", _toy_inputs())
            assert bad.script.infer_count > 4  # the trial succeeded and it is back in rotation
    finally:
        await gateway.stop(grace_s=0)
        for f in (good, bad):
            await f.stop()


async def test_a_failed_request_is_sent_once_more_never_twice() -> None:
    fakes = [FakeTriton(n) for n in "abc"]
    for f in fakes:
        await f.start()
        f.script.infer_error = (grpc.StatusCode.UNAVAILABLE, "Stream removed")
    gateway = await _gateway([f.address for f in fakes])
    try:
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            with pytest.raises(InferenceServerException) as err:
                await client.infer("toy", _toy_inputs())
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert sum(f.script.infer_count for f in fakes) == 2
    finally:
        await gateway.stop(grace_s=0)
        for f in fakes:
            await f.stop()


@pytest.mark.triton
async def test_every_request_is_answered_when_one_of_three_tritons_is_killed(
    tritons: list[TritonServer], tmp_path: Path
) -> None:
    third = TritonServer(
        TritonPorts(free_port(), free_port(), free_port()),
        model_repository=REPO / "model_repository",
        workdir=REPO / ".sonic" / "triton",
        log_path=tmp_path / "third.log",
        models=["identity_fp32"],
    )
    await asyncio.to_thread(third.start)
    try:
        await asyncio.to_thread(third.wait_ready, 120)
        settings = gateway_settings(tritons)
        backends = [*settings.model_dump()["backends"], {"facility": "third", "grpc": third.grpc_address}]
        gateway = Gateway(
            gateway_settings(tritons, backends=backends), metrics_registry=CollectorRegistry()
        )
        await gateway.start()
        third_id = next(b for b in gateway.registry.snapshot.backends if b.startswith("third/"))
        answered = 0
        patches = np.ones((4, 48, 48, 1), np.float32)
        try:
            async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
                stop_at = time.monotonic() + 2.5

                async def loop() -> None:
                    nonlocal answered
                    while time.monotonic() < stop_at:
                        inp = tc.InferInput("INPUT0", list(patches.shape), "FP32")
                        inp.set_data_from_numpy(patches)
                        result = await client.infer("identity_fp32", [inp])
                        assert result.as_numpy("OUTPUT0")[:, 0].tolist() == [2304.0] * 4
                        answered += 1

                async def kill() -> None:
                    await asyncio.sleep(0.8)
                    assert third.process is not None
                    os.killpg(third.process.pid, signal.SIGKILL)

                await asyncio.gather(*(loop() for _ in range(4)), kill())
        finally:
            await gateway.stop(grace_s=1)
        assert answered > 20
        assert not gateway.registry.snapshot.health[third_id].healthy or gateway.breaker.ejected(third_id)
    finally:
        await asyncio.to_thread(third.stop)
