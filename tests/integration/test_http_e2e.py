"""An unmodified tritonclient.http session through the gateway gives what Triton itself gives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as tsync
import tritonclient.http.aio as th
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.triton.launcher import TritonServer
from tests.support.patches import sparse_patches
from tests.support.shm import registered_region

pytestmark = [
    pytest.mark.triton,
    # aiohttp (inside tritonclient.http.aio) warns about any raw body over 1 MiB: the client's business.
    pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning"),
]

MODEL = "emtrack_michel"
OUTPUTS = ("em_trk_none_netout", "michel_netout")


def _inputs(x: np.ndarray, binary: bool = True, name: str = "main_input") -> list[th.InferInput]:
    inp = th.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return [inp]


def _outputs(binary: bool = True, names: tuple[str, ...] = OUTPUTS) -> list[th.InferRequestedOutput]:
    return [th.InferRequestedOutput(n, binary_data=binary) for n in names]


@pytest.fixture
async def clients(gateway: Gateway, tritons: list[TritonServer]) -> AsyncIterator[Any]:
    via = th.InferenceServerClient(f"127.0.0.1:{gateway.http_port}")
    direct = th.InferenceServerClient(f"127.0.0.1:{tritons[0].ports.http}")
    yield via, direct
    await via.close()
    await direct.close()


async def test_health_metadata_config_ready_match_direct(clients: Any) -> None:
    via, direct = clients
    assert await via.is_server_live()
    assert await via.is_server_ready()
    assert await via.is_model_ready(MODEL)
    assert await via.is_model_ready(MODEL, "1")
    assert not await via.is_model_ready("no_such_model")
    assert await via.get_server_metadata() == await direct.get_server_metadata()
    for model in (MODEL, "identity_fp32"):
        assert await via.get_model_metadata(model) == await direct.get_model_metadata(model)
        assert await via.get_model_config(model) == await direct.get_model_config(model)
    assert await via.get_model_metadata(MODEL, "1") == await direct.get_model_metadata(MODEL, "1")
    index = await via.get_model_repository_index()
    assert {(e["name"], e["state"]) for e in index} >= {(MODEL, "READY"), ("identity_fp32", "READY")}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_infer_binary_and_json_equal_direct(clients: Any, binary: bool) -> None:
    via, direct = clients
    x = sparse_patches(5)
    a = await via.infer(MODEL, _inputs(x, binary), outputs=_outputs(binary))
    b = await direct.infer(MODEL, _inputs(x, binary), outputs=_outputs(binary))
    for name in OUTPUTS:
        np.testing.assert_array_equal(a.as_numpy(name), b.as_numpy(name))
    assert a.as_numpy("em_trk_none_netout").shape == (5, 3)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
async def test_compressed_request_and_response(clients: Any, algorithm: str) -> None:
    via, direct = clients
    x = np.ones((4, 48, 48, 1), np.float32)
    a = await via.infer(
        "identity_fp32",
        _inputs(x, name="INPUT0"),
        outputs=_outputs(names=("OUTPUT0",)),
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    b = await direct.infer("identity_fp32", _inputs(x, name="INPUT0"), outputs=_outputs(names=("OUTPUT0",)))
    np.testing.assert_array_equal(a.as_numpy("OUTPUT0"), b.as_numpy("OUTPUT0"))


async def test_compressed_response_is_passed_through_undecoded(gateway: Gateway) -> None:
    body = {"inputs": [{"name": "INPUT0", "shape": [2, 48, 48, 1], "datatype": "FP32", "data": [0.5] * 4608}]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as c:
        r = await c.post(
            "/v2/models/identity_fp32/infer",
            json=body,
            headers={"accept-encoding": "gzip", "x-request-id": "abc123", "authorization": "Bearer x"},
        )
    assert r.status_code == 200, r.text
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["x-request-id"] == "abc123"
    assert r.json()["outputs"][0]["name"] == "OUTPUT0"  # httpx decoded what the gateway passed through


@pytest.mark.parametrize("n", [1, 235, 1693])
async def test_batches_equal_direct_and_are_recorded(clients: Any, gateway: Gateway, n: int) -> None:
    via, direct = clients
    x = sparse_patches(n, seed=n)
    a = await via.infer(MODEL, _inputs(x), outputs=_outputs(), headers={"sonic-job-id": "job-7"})
    b = await direct.infer(MODEL, _inputs(x), outputs=_outputs())
    for name in OUTPUTS:
        np.testing.assert_array_equal(a.as_numpy(name), b.as_numpy(name))
    events = gateway.recorder.events  # type: ignore[attr-defined]
    event = events[-1]
    assert (event.model, event.inferences, event.version_served, event.job_id) == (MODEL, n, "1", "job-7")


async def test_unknown_model_is_404_naming_it(gateway: Gateway, clients: Any) -> None:
    via, _ = clients
    with pytest.raises(InferenceServerException) as err:
        await via.infer("no_such_model", _inputs(sparse_patches(1)))
    assert "no_such_model" in err.value.message()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as c:
        r = await c.get("/v2/models/no_such_model")
    assert r.status_code == 404
    assert "'no_such_model'" in r.json()["error"]


async def test_statistics_merged_across_backends(clients: Any) -> None:
    via, _ = clients
    await via.infer(MODEL, _inputs(sparse_patches(2)), outputs=_outputs())
    stats = await via.get_inference_statistics(MODEL)
    assert [s["name"] for s in stats["model_stats"]] == [MODEL]
    assert stats["model_stats"][0]["inference_count"] >= 2
    everything = await via.get_inference_statistics()
    assert {s["name"] for s in everything["model_stats"]} >= {MODEL, "identity_fp32"}


async def test_sync_tritonclient_http_works_unmodified(gateway: Gateway) -> None:
    def session() -> np.ndarray:
        client = tsync.InferenceServerClient(f"127.0.0.1:{gateway.http_port}", network_timeout=20)
        try:
            assert client.is_server_ready()
            assert client.get_model_metadata(MODEL)["name"] == MODEL
            inp = tsync.InferInput("main_input", [3, 48, 48, 1], "FP32")
            inp.set_data_from_numpy(sparse_patches(3))
            result = client.infer(
                MODEL, [inp], request_compression_algorithm="gzip", response_compression_algorithm="deflate"
            )
            out: np.ndarray = result.as_numpy("michel_netout")
            return out
        finally:
            client.close()

    out = await asyncio.wait_for(asyncio.to_thread(session), 30)
    assert out.shape == (3, 1)


async def test_shared_memory_another_client_registered_is_not_reachable(
    clients: Any, tritons: list[TritonServer]
) -> None:
    """A region a local client registered on the facility's Triton: direct use works, via us never."""
    via, _ = clients
    secret = np.full((1, 48, 48, 1), 3.0, np.float32)
    owners = [th.InferenceServerClient(f"127.0.0.1:{t.ports.http}") for t in tritons]
    async with registered_region(owners, "victim", "/sonic_e2e_victim_http", secret):
        inp = th.InferInput("INPUT0", [1, 48, 48, 1], "FP32")
        inp.set_shared_memory("victim", secret.nbytes)
        direct = await owners[0].infer("identity_fp32", [inp])
        assert direct.as_numpy("OUTPUT0")[0, 0] == 3.0 * 48 * 48  # the premise: Triton reads the region
        for binary in (True, False):
            out = th.InferRequestedOutput("OUTPUT0", binary_data=binary)
            with pytest.raises(InferenceServerException) as err:
                await via.infer("identity_fp32", [inp], outputs=[out])
            assert err.value.status() == "400"
            assert "shared memory is not available through the gateway" in err.value.message()


def _shape(value: Any) -> Any:
    """The keys of a JSON document, recursively (lists by their first element), without the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


async def test_statistics_keep_zero_and_empty_fields_as_triton_does(clients: Any) -> None:
    via, direct = clients
    x = np.ones((1, 48, 48, 1), np.float32)
    for client in (via, direct):
        await client.infer("identity_fp32", _inputs(x, name="INPUT0"), outputs=_outputs(names=("OUTPUT0",)))
    got = await via.get_inference_statistics("identity_fp32")
    want = await direct.get_inference_statistics("identity_fp32")
    assert got["model_stats"][0]["inference_stats"]["fail"]["count"] == 0
    assert got["model_stats"][0]["memory_usage"] == []
    got_shape, want_shape = _shape(got), _shape(want)
    for stats in (got_shape, want_shape):  # how many batch sizes each has seen differs
        stats["model_stats"][0].pop("batch_stats")
    assert got_shape == want_shape


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/nothing"),
        ("GET", "/v2/models/identity_fp32/nothing"),
        ("GET", "/v3/x"),
        ("DELETE", "/v2"),
        ("GET", "/v2/models/identity_fp32/infer"),
        ("POST", "/v2/health/ready"),
        ("GET", "/v2/repository/index"),
        ("GET", "/v2/models/no_such_model/stats"),
        ("GET", "/v2/models/identity_fp32/versions/9/stats"),
        ("GET", "/v2/models/no_such_model"),
    ],
)
async def test_errors_have_tritons_status_and_shape(
    gateway: Gateway, tritons: list[TritonServer], method: str, path: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as c:
        via = await c.request(method, f"http://127.0.0.1:{gateway.http_port}{path}")
        direct = await c.request(method, f"http://127.0.0.1:{tritons[0].ports.http}{path}")
    assert via.status_code == direct.status_code
    assert list(via.json()) == list(direct.json()) == ["error"]
