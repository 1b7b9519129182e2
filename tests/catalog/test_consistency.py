"""Model consistency: what real Triton servers serve, compared with the catalog's model versions.

A matching entry routes; a different signature or a registered version that is not ready takes that
backend out of routing for that model only, says why in the API and in the metric, and routes again
once fixed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from sqlalchemy import Engine
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.catalog.consistency import Expected, ServedModel, Tensor, compare
from gateway.triton.launcher import TritonServer
from tests.catalog.support import ADMIN, READER, make_gateway
from tests.support.net import free_port

IDENTITY = {
    "version": "1",
    "platform": "python",
    "max_batch_size": 4096,
    # Both spellings a catalog may use: per item (config.pbtxt dims) and batch-first (ModelMetadata).
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [48, 48, 1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "TYPE_FP32", "shape": [-1, 1]}],
}
EMTRACK_WRONG = {
    "version": "1",
    "max_batch_size": 4096,
    "inputs": [{"name": "main_input", "datatype": "FP32", "shape": [48, 48, 2]}],
    "outputs": [
        {"name": "em_trk_none_netout", "datatype": "FP32", "shape": [3]},
        {"name": "michel_netout", "datatype": "FP32", "shape": [1]},
    ],
}


# -- the comparison itself ----------------------------------------------------------------------------
SERVED = ServedModel(
    "m", "1", "", "onnxruntime", 8, (Tensor("x", "FP32", (4,)),), (Tensor("y", "INT64", (1,)),)
)


def _expected(**values: Any) -> Expected:
    base: dict[str, Any] = {
        "model_version_id": 1,
        "model": "m",
        "version": "1",
        "inputs": ({"name": "x", "datatype": "FP32", "shape": [4]},),
        "outputs": ({"name": "y", "datatype": "INT64", "shape": [-1, 1]},),
        "max_batch_size": 8,
    }
    return Expected(**{**base, **values})


def test_a_matching_entry_has_no_problems() -> None:
    assert compare(_expected(platform="onnxruntime"), SERVED) == []
    assert compare(_expected(inputs=(), outputs=(), max_batch_size=0), SERVED) == []  # nothing recorded


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"platform": "tensorrt_plan"}, "platform: the catalog says 'tensorrt_plan'"),
        ({"max_batch_size": 16}, "max_batch_size: the catalog says 16, the backend serves 8"),
        (
            {"inputs": ({"name": "x", "datatype": "FP16", "shape": [4]},)},
            "input 'x': the catalog says FP16 [4], the backend serves FP32 [-1, 4]",
        ),
        ({"inputs": ({"name": "z", "datatype": "FP32", "shape": [4]},)}, "the backend has no input 'z'"),
        ({"outputs": ()}, ""),  # outputs not recorded: not checked
        (
            {
                "outputs": (
                    {"name": "y", "datatype": "INT64", "shape": [1]},
                    {"name": "w", "datatype": "FP32", "shape": [1]},
                )
            },
            "the backend has no output 'w'",
        ),
    ],
)
def test_each_difference_is_named(change: dict[str, Any], words: str) -> None:
    problems = compare(_expected(**change), SERVED)
    if words:
        assert any(words in p for p in problems), problems
    else:
        assert problems == []


def test_tensors_the_catalog_omits_are_a_difference() -> None:
    served = ServedModel("m", "1", "", "python", 8, (*SERVED.inputs, Tensor("extra", "FP32", (1,))), ())
    assert compare(_expected(outputs=()), served) == [
        "the backend has input(s) the catalog does not list: extra"
    ]


# -- against real Triton ------------------------------------------------------------------------------
@pytest.fixture
async def started(migrated_engine: Engine, db_url: str) -> AsyncIterator[Gateway]:
    gw = make_gateway(
        db_url,
        routing={"health_interval_s": 0.1, "probe_timeout_s": 2.0},
        catalog={"consistency_interval_s": 60},  # rounds in these tests come from the writes
    )
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop(grace_s=0.5)


async def _settled(gw: Gateway, before: int) -> None:
    """Wait for the consistency round(s) a write woke to finish."""
    monitor = gw.catalog.consistency
    assert monitor is not None
    for _ in range(1000):
        if monitor.rounds > before and not monitor.busy:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no consistency round finished in 10 s")


async def _write(gw: Gateway, call: Any) -> httpx.Response:
    monitor = gw.catalog.consistency
    assert monitor is not None
    before = monitor.rounds
    response: httpx.Response = await call
    assert response.is_success, response.text
    await _settled(gw, before)
    return response


async def _deployments(http: httpx.AsyncClient, **params: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    r = await http.get("/api/v1/deployments", params=params, headers=READER)
    assert r.status_code == 200
    return {(d["facility"], d["model"], d["version"]): d for d in r.json()["items"]}


async def _healthy(gw: Gateway, *backend_ids: str) -> None:
    for _ in range(500):
        health = gw.registry.snapshot.health
        if all(i in health and health[i].healthy for i in backend_ids):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backends {backend_ids} not healthy in 5 s")


def _gauge(gw: Gateway, model: str, backend: str) -> float | None:
    return gw.metrics_registry.get_sample_value(
        "sonic_gateway_catalog_model_consistent",
        {"model": model, "facility": backend.split("/")[0], "backend": backend},
    )


@pytest.mark.triton
async def test_catalog_and_real_triton_consistency(tritons: list[TritonServer], started: Gateway) -> None:
    gw = started
    lab, hpc = (f"{name}/{t.grpc_address}" for name, t in zip(("lab", "hpc"), tritons, strict=True))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}", headers=ADMIN) as http:
        backend_ids = {}
        for name, triton in zip(("lab", "hpc"), tritons, strict=True):
            await _write(gw, http.post("/api/v1/facilities", json={"name": name}))
            r = await _write(
                gw, http.post("/api/v1/backends", json={"facility": name, "address": triton.grpc_address})
            )
            backend_ids[name] = r.json()["id"]
        await _write(gw, http.post("/api/v1/models", json={"name": "identity_fp32", "versions": [IDENTITY]}))
        r = await _write(
            gw, http.post("/api/v1/models", json={"name": "emtrack_michel", "versions": [EMTRACK_WRONG]})
        )
        [emtrack_version_id] = [
            v["id"] for v in (await http.get(f"/api/v1/models/{r.json()['id']}/versions")).json()["items"]
        ]
        for model in ("identity_fp32", "emtrack_michel"):
            body = {"backend_id": backend_ids["lab"], "model": model, "version": "1"}
            await _write(gw, http.post("/api/v1/deployments", json=body))
        await _healthy(gw, lab, hpc)
        await _write(gw, http.patch(f"/api/v1/backends/{backend_ids['hpc']}", json={"capacity": 2}))

        # The matching entry routes to both; the differing one to neither (both Tritons serve it).
        deployments = await _deployments(http)
        identity = deployments[("lab", "identity_fp32", "1")]
        assert (identity["state"], identity["consistency"], identity["consistency_reason"]) == (
            "registered",
            "consistent",
            "",
        )
        assert identity["checked_at"] is not None
        assert deployments[("hpc", "identity_fp32", "1")]["state"] == "observed"
        wrong = deployments[("lab", "emtrack_michel", "1")]
        assert wrong["consistency"] == "mismatch"
        assert (
            "input 'main_input': the catalog says FP32 [48, 48, 2], the backend serves FP32 [-1, 48, 48, 1]"
            in (wrong["consistency_reason"])
        )
        assert f"PATCH /api/v1/model-versions/{emtrack_version_id}" in wrong["consistency_reason"]
        mismatched = await _deployments(http, consistency="mismatch")
        assert set(mismatched) == {("lab", "emtrack_michel", "1"), ("hpc", "emtrack_michel", "1")}
        snapshot = gw.registry.snapshot
        assert {b.id for b in snapshot.candidates("identity_fp32")} == {lab, hpc}
        assert snapshot.candidates("emtrack_michel") == []
        assert {b.id for b in snapshot.candidates("delay_fp32")} == {lab, hpc}  # not in the catalog
        assert (_gauge(gw, "identity_fp32", lab), _gauge(gw, "emtrack_michel", lab)) == (1.0, 0.0)

        # Through the gateway: the consistent model is served, the excluded one is unavailable.
        async with tc.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}") as client:
            x = np.ones((3, 48, 48, 1), np.float32)
            for model, name in (("identity_fp32", "INPUT0"), ("emtrack_michel", "main_input")):
                inp = tc.InferInput(name, list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                if model == "identity_fp32":
                    result = await client.infer(model, [inp], headers=READER)
                    np.testing.assert_allclose(result.as_numpy("OUTPUT0")[:, 0], 48 * 48)
                else:
                    with pytest.raises(InferenceServerException) as err:
                        await client.infer(model, [inp], headers=READER)
                    assert err.value.status() == "StatusCode.UNAVAILABLE"

        # Fixed in the catalog: routed again at once (the write wakes the check).
        fixed = [{**EMTRACK_WRONG["inputs"][0], "shape": [48, 48, 1]}]
        await _write(gw, http.patch(f"/api/v1/model-versions/{emtrack_version_id}", json={"inputs": fixed}))
        assert {b.id for b in gw.registry.snapshot.candidates("emtrack_michel")} == {lab, hpc}
        assert (await _deployments(http))[("lab", "emtrack_michel", "1")]["consistency"] == "consistent"
        assert _gauge(gw, "emtrack_michel", lab) == 1.0

        # A registered version the backend does not serve: that backend, that model only, is excluded.
        r = await http.get("/api/v1/models", params={"name": "identity_fp32"})
        model_id = r.json()["items"][0]["id"]
        await _write(gw, http.post(f"/api/v1/models/{model_id}/versions", json={**IDENTITY, "version": "2"}))
        body = {"backend_id": backend_ids["lab"], "model": "identity_fp32", "version": "2"}
        await _write(gw, http.post("/api/v1/deployments", json=body))
        not_ready = (await _deployments(http))[("lab", "identity_fp32", "2")]
        assert not_ready["consistency"] == "not_ready"
        assert "does not report it ready (it reports 1)" in not_ready["consistency_reason"]
        snapshot = gw.registry.snapshot
        assert [b.id for b in snapshot.candidates("identity_fp32")] == [hpc]
        assert {b.id for b in snapshot.candidates("emtrack_michel")} == {lab, hpc}
        assert _gauge(gw, "identity_fp32", lab) == 0.0

        # Observation written back: health time and what each backend reports, visible in the API.
        backend = (await http.get(f"/api/v1/backends/{backend_ids['hpc']}")).json()
        assert backend["last_health_at"] is not None
        assert backend["observed_models"]["delay_fp32"] == ["1"]
        assert backend["observed_models"]["identity_fp32"] == ["1"]
        observed = await _deployments(http, state="observed")
        assert ("hpc", "identity_fp32", "1") in observed
        assert ("lab", "identity_fp32", "1") not in observed  # registered there

        # Deleting the registration: the exclusion and its metric go with it.
        await _write(gw, http.delete(f"/api/v1/deployments/{not_ready['id']}"))
        assert {b.id for b in gw.registry.snapshot.candidates("identity_fp32")} == {lab, hpc}


async def test_a_backend_that_never_answered_serves_nothing_registered_on_it(started: Gateway) -> None:
    gw = started
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}", headers=ADMIN) as http:
        await _write(gw, http.post("/api/v1/facilities", json={"name": "dark"}))
        r = await _write(gw, http.post("/api/v1/backends", json={"facility": "dark", "address": address}))
        await _write(gw, http.post("/api/v1/models", json={"name": "toy", "versions": [{"version": "1"}]}))
        body = {"backend_id": r.json()["id"], "model": "toy", "version": "1"}
        await _write(gw, http.post("/api/v1/deployments", json=body))
        [deployment] = (await _deployments(http)).values()
        assert deployment["consistency"] == "unreachable"
        assert "did not answer" in deployment["consistency_reason"]
        assert (f"dark/{address}", "toy") in gw.registry.snapshot.excluded
        backend = (await http.get(f"/api/v1/backends/{r.json()['id']}")).json()
        assert (backend["last_health_at"], backend["observed_models"]) == (None, {})
