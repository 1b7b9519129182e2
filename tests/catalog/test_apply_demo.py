"""``facilities/local-demo.yaml`` applied to a gateway in front of a real Triton: the signatures it declares
are what Triton serves (every deployment ``consistent``), and inference through the gateway is routed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from sqlalchemy import Engine

from gateway.app import Gateway
from gateway.catalog.apply import apply_files, load_files
from gateway.triton.launcher import TritonServer
from tests.catalog.support import READER, make_gateway

DEMO = Path(__file__).resolve().parents[2] / "facilities" / "local-demo.yaml"
OUTPUTS = {
    "emtrack_michel": {"em_trk_none_netout": 3, "michel_netout": 1},
    "identity_fp32": {"OUTPUT0": 1},
    "delay_fp32": {"OUTPUT0": 1},
}


@pytest.fixture
async def started(migrated_engine: Engine, db_url: str) -> AsyncIterator[Gateway]:
    gw = make_gateway(
        db_url,
        routing={"health_interval_s": 0.1, "probe_timeout_s": 2.0},
        catalog={"consistency_interval_s": 60},  # rounds come from the writes
    )
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(grace_s=0.5)


async def _verdicts(http: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """The deployments once the consistency check has reached a verdict on each (at most 20 s)."""
    items: list[dict[str, Any]] = []
    for _ in range(400):
        items = (await http.get("/api/v1/deployments", params={"facility": "local-a"})).json()["items"]
        if len(items) == len(OUTPUTS) and all(d["consistency"] != "unchecked" for d in items):
            break
        await asyncio.sleep(0.05)
    return {d["model"]: d for d in items}


@pytest.mark.triton
async def test_local_demo_is_consistent_with_real_triton_and_routes(
    tritons: list[TritonServer], started: Gateway, tmp_path: Path
) -> None:
    gw = started
    triton = tritons[0]
    demo = tmp_path / "local-demo.yaml"  # the demo, pointed at the test's Triton ports
    demo.write_text(
        DEMO.read_text()
        .replace("127.0.0.1:9001", triton.grpc_address)
        .replace("127.0.0.1:9000", f"127.0.0.1:{triton.ports.http}")
        .replace("127.0.0.1:9002", f"127.0.0.1:{triton.ports.metrics}")
    )
    assert {m.name for m in load_files([demo]).models} == set(OUTPUTS)
    url = f"http://127.0.0.1:{gw.http_port}"
    report = await apply_files([demo], url, "admin")
    # The consistency check may see the models on the new backend before their deployments are
    # registered ('observed'); registering them then turns the observations into registrations.
    for line in report.lines:
        ok = (
            ("created", "updated (observed -> registered)") if line.startswith("deployment") else ("created",)
        )
        assert line.split(": ", 1)[1] in ok, report.lines
    assert len(report.lines) == 11

    async with httpx.AsyncClient(base_url=url, headers=READER) as http:
        verdicts = await _verdicts(http)
        assert {m: (d["state"], d["consistency"], d["consistency_reason"]) for m, d in verdicts.items()} == {
            m: ("registered", "consistent", "") for m in OUTPUTS
        }
        again = await apply_files([demo], url, "admin")
        assert again.summary() == "0 created, 0 updated, 11 unchanged, 0 deleted"

    backend_id = f"local-a/{triton.grpc_address}"
    for _ in range(500):
        if all(backend_id in {b.id for b in gw.registry.snapshot.candidates(m)} for m in OUTPUTS):
            break
        await asyncio.sleep(0.01)
    for model in OUTPUTS:  # the only backend: inference below can only go there
        assert [b.id for b in gw.registry.snapshot.candidates(model)] == [backend_id], model
    async with tc.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}") as client:
        x = np.ones((2, 48, 48, 1), np.float32)
        for model, outputs in OUTPUTS.items():
            name = "main_input" if model == "emtrack_michel" else "INPUT0"
            inp = tc.InferInput(name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = await client.infer(model, [inp], headers=READER)
            for output, width in outputs.items():
                assert result.as_numpy(output).shape == (2, width), (model, output)
