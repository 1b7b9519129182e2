"""A model version's allowed_groups restrict the model, through the real gateway and token validation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.config import load_settings
from tests.support.fake_triton import FakeTriton


@pytest.fixture
async def secured(
    migrated_engine: Engine, db_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, DevIssuer, FakeTriton]]:
    backend = FakeTriton("lab")
    await backend.start()
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        database_url=db_url,
        backends=[{"facility": "lab", "grpc": backend.address}],
        routing={"health_interval_s": 0.1},
        auth={
            "dev_issuer": {"enabled": True, "key_dir": str(tmp_path / "keys")},
            "admin_groups": ["/admins"],
        },
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        yield gateway, DevIssuer(settings.auth.dev_issuer), backend
    finally:
        await gateway.stop(grace_s=0)
        await backend.stop()


async def _infer(gateway: Gateway, token: str) -> InferenceServerException | None:
    x = np.ones((2, 2), np.float32)
    inp = tc.InferInput("x", [2, 2], "FP32")
    inp.set_data_from_numpy(x)
    async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        try:
            await client.infer("toy", [inp], headers={"authorization": f"Bearer {token}"})
        except InferenceServerException as exc:
            return exc
    return None


async def test_allowed_groups_from_the_catalog_restrict_the_model(
    secured: tuple[Gateway, DevIssuer, FakeTriton],
) -> None:
    gateway, issuer, _ = secured
    admin = issuer.mint("root", groups=["/admins"])
    member = issuer.mint("alice", groups=["/dune/reco"])
    outsider = issuer.mint("bob", groups=["/dune/analysis"])
    for _ in range(250):
        if gateway.registry.snapshot.candidates("toy"):
            break
        await asyncio.sleep(0.02)
    assert await _infer(gateway, outsider) is None  # not in the catalog: unrestricted

    base = f"http://127.0.0.1:{gateway.http_port}"
    async with httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {admin}"}) as http:
        body = {"name": "toy", "versions": [{"version": "1", "allowed_groups": ["/dune/reco"]}]}
        r = await http.post("/api/v1/models", json=body)
        assert r.status_code == 201, r.text
        version_id = (await http.get(f"/api/v1/models/{r.json()['id']}/versions")).json()["items"][0]["id"]

        error = await _infer(gateway, outsider)
        assert error is not None
        assert error.status() == "StatusCode.PERMISSION_DENIED"
        assert "/dune/reco" in error.message()
        assert await _infer(gateway, member) is None
        # The REST frontend applies the same policy before anything reaches a backend.
        denied = await http.post(
            "/v2/models/toy/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            headers={"authorization": f"Bearer {outsider}"},
        )
        assert denied.status_code == 403
        assert "/dune/reco" in denied.json()["error"]

        # Lifted in the catalog: open again without a restart.
        r = await http.patch(f"/api/v1/model-versions/{version_id}", json={"allowed_groups": []})
        assert r.status_code == 200
        assert await _infer(gateway, outsider) is None
