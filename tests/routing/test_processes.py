"""Two real gateway processes (``sonic-gateway serve``) sharing a real Redis: one load view, one limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from tritonclient.utils import InferenceServerException

from tests.support.fake_triton import FakeTriton, Script
from tests.support.net import free_port
from tests.support.redis import delete_prefix, redis_url, unique_prefix

pytestmark = pytest.mark.redis

SONIC_GATEWAY = str(Path(sys.executable).parent / "sonic-gateway")
BIG = 100_000  # bytes of tensor data in a rate-limited request


async def _ready(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        if proc.returncode is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} while starting")
        with contextlib.suppress(InferenceServerException):
            async with tc.InferenceServerClient(f"127.0.0.1:{port}") as client:
                if await client.is_model_ready("toy", "2"):
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError("gateway did not become ready")


@pytest.fixture
async def two_gateways(tmp_path: Path) -> AsyncIterator[tuple[list[int], FakeTriton, FakeTriton]]:
    url = redis_url()
    prefix = unique_prefix()
    slow = FakeTriton("slow", Script(models={"toy": ["1", "2"]}, infer_delay_s=2.0))
    fast = FakeTriton("fast", Script(models={"toy": ["1"]}))
    for f in (slow, fast):
        await f.start()
    ports = [free_port(), free_port()]
    procs = []
    try:
        for i, port in enumerate(ports):
            config = {
                "listen": {"grpc": f"127.0.0.1:{port}", "http": f"127.0.0.1:{free_port()}"},
                "database_url": f"sqlite:///{tmp_path}/gw{i}.db",
                "redis_url": url,
                "state": {"key_prefix": prefix, "sync_interval_s": 0.05},
                "auth": {"enabled": False},
                "backends": [
                    {"facility": "slow", "grpc": slow.address},
                    {"facility": "fast", "grpc": fast.address},
                ],
                "routing": {"health_interval_s": 0.5},
                # Stopped at teardown: what the test left in flight need not get the default 30 s.
                "shutdown_grace_s": 2,
                # 4 big requests' worth of bytes, refilled slowly: the 5th must wait whoever serves it.
                "limits": {"default": {"bytes_per_s": BIG / 10, "burst_s": 40.5}},
            }
            path = tmp_path / f"gw{i}.yaml"
            path.write_text(json.dumps(config))  # JSON is YAML
            procs.append(
                await asyncio.create_subprocess_exec(
                    SONIC_GATEWAY, "serve", "--config", str(path), start_new_session=True
                )
            )
        await asyncio.gather(*(_ready(p, proc) for p, proc in zip(ports, procs, strict=True)))
        yield ports, slow, fast
    finally:
        for proc in procs:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        for f in (slow, fast):
            await f.stop()
        await delete_prefix(url, prefix)


def _inputs(n: int) -> list[tc.InferInput]:
    x = np.zeros((1, n // 4), np.float32)
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


async def test_two_gateway_processes_share_load_and_rate_limits(
    two_gateways: tuple[list[int], FakeTriton, FakeTriton],
) -> None:
    (port1, port2), slow, fast = two_gateways
    async with (
        tc.InferenceServerClient(f"127.0.0.1:{port1}") as one,
        tc.InferenceServerClient(f"127.0.0.1:{port2}") as two,
    ):
        # Through gateway 1: four long requests for version 2, which only the slow backend serves.
        held = [asyncio.create_task(one.infer("toy", _inputs(8), model_version="2")) for _ in range(4)]
        await asyncio.sleep(0.5)  # several sync rounds
        # Gateway 2 sent nothing to the slow backend, yet sees its four and avoids it every time
        # (alone, it would see two idle backends and pick the slow one half the time).
        for _ in range(8):
            result = await two.infer("toy", _inputs(8))
            assert result.as_numpy("SERVED_BY")[0] == b"fast"
        await asyncio.gather(*held)
        assert (slow.script.infer_count, fast.script.infer_count) == (4, 8)

        # One byte budget for both processes: 4 big requests pass in all, not 4 per process.
        outcomes = []
        for i in range(10):
            client = one if i % 2 else two
            try:
                await client.infer("toy", _inputs(BIG), model_version="1")
                outcomes.append("ok")
            except InferenceServerException as exc:
                outcomes.append(exc.status())
        assert outcomes.count("ok") == 4, outcomes
        assert outcomes.count("StatusCode.RESOURCE_EXHAUSTED") == 6, outcomes
