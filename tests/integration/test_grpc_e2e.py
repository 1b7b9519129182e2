"""An unmodified tritonclient.grpc session through the gateway gives what Triton itself gives."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.triton.launcher import TritonServer
from tests.support.patches import sparse_patches

pytestmark = pytest.mark.triton

MODEL = "emtrack_michel"


def _inputs(x: np.ndarray) -> list[tc.InferInput]:
    inp = tc.InferInput("main_input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def _strip_volatile(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in ("id",)}


@pytest.fixture
async def clients(gateway: Gateway, tritons: list[TritonServer]) -> Any:
    via = tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}")
    direct = tc.InferenceServerClient(tritons[0].grpc_address)
    yield via, direct
    await via.close()
    await direct.close()


async def test_server_and_model_metadata_and_config_match_direct(clients: Any) -> None:
    via, direct = clients
    assert await via.is_server_live()
    assert await via.is_server_ready()
    assert await via.is_model_ready(MODEL)
    assert not await via.is_model_ready("no_such_model")
    for call in ("get_server_metadata",):
        assert MessageToDict(await getattr(via, call)()) == MessageToDict(await getattr(direct, call)())
    assert MessageToDict(await via.get_model_metadata(MODEL)) == MessageToDict(
        await direct.get_model_metadata(MODEL)
    )
    assert MessageToDict(await via.get_model_config(MODEL)) == MessageToDict(
        await direct.get_model_config(MODEL)
    )
    index = MessageToDict(await via.get_model_repository_index())
    assert {m["name"] for m in index["models"]} >= {MODEL, "identity_fp32"}


@pytest.mark.parametrize("batch", [1, 235, 1693])
async def test_inference_matches_direct(clients: Any, batch: int) -> None:
    via, direct = clients
    x = sparse_patches(batch, seed=batch)
    got = await via.infer(MODEL, _inputs(x))
    want = await direct.infer(MODEL, _inputs(x))
    for name in ("em_trk_none_netout", "michel_netout"):
        np.testing.assert_allclose(got.as_numpy(name), want.as_numpy(name), rtol=1e-5, atol=1e-6)
    assert got.as_numpy("em_trk_none_netout").shape == (batch, 3)
    assert got.get_response().model_version == "1"


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
async def test_compressed_requests_work(clients: Any, algorithm: str) -> None:
    via, direct = clients
    x = sparse_patches(235, seed=3)
    got = await via.infer(MODEL, _inputs(x), compression_algorithm=algorithm)
    want = await direct.infer(MODEL, _inputs(x))
    np.testing.assert_allclose(got.as_numpy("michel_netout"), want.as_numpy("michel_netout"), rtol=1e-5)


async def test_requests_are_shared_across_facilities_and_statistics_add_up(
    gateway: Gateway, clients: Any
) -> None:
    via, _ = clients
    x = sparse_patches(4, seed=1)
    before = MessageToDict(await via.get_inference_statistics("identity_fp32"))
    count_before = int(before["modelStats"][0].get("inferenceCount", 0))
    inp = tc.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(40):
        await via.infer("identity_fp32", [inp])
    after = MessageToDict(await via.get_inference_statistics("identity_fp32"))
    assert int(after["modelStats"][0]["inferenceCount"]) == count_before + 40 * 4
    facilities = Counter(e.facility for e in gateway.recorder.events)  # type: ignore[attr-defined]
    assert set(facilities) == {"lab", "hpc"}
    assert min(facilities.values()) >= 5  # idle backends tie, ties are random: both get work


async def test_streaming_inference(clients: Any) -> None:
    via, direct = clients
    x = sparse_patches(8, seed=5)
    want = await direct.infer(MODEL, _inputs(x))

    async def requests() -> Any:
        for i in range(3):
            yield {"model_name": MODEL, "inputs": _inputs(x), "request_id": str(i)}

    seen = []
    async for result, error in via.stream_infer(requests()):
        assert error is None
        np.testing.assert_allclose(
            result.as_numpy("michel_netout"), want.as_numpy("michel_netout"), rtol=1e-5
        )
        seen.append(result.get_response().id)
    assert sorted(seen) == ["0", "1", "2"]


async def test_shared_memory_another_client_registered_is_not_reachable(
    clients: Any, tritons: list[TritonServer]
) -> None:
    """A region a local client registered on the facility's Triton: direct use works, via us never."""
    import tritonclient.utils.shared_memory as shm

    via, _ = clients
    secret = np.full((1, 48, 48, 1), 7.0, np.float32)
    region = shm.create_shared_memory_region("victim", "/sonic_e2e_victim_grpc", secret.nbytes)
    shm.set_shared_memory_region(region, [secret])
    owners = [tc.InferenceServerClient(t.grpc_address) for t in tritons]
    try:
        for owner in owners:
            await owner.register_system_shared_memory("victim", "/sonic_e2e_victim_grpc", secret.nbytes)
        inp = tc.InferInput("INPUT0", [1, 48, 48, 1], "FP32")
        inp.set_shared_memory("victim", secret.nbytes)
        direct = await owners[0].infer("identity_fp32", [inp])
        assert direct.as_numpy("OUTPUT0")[0, 0] == 7.0 * 48 * 48  # the premise: Triton reads the region
        with pytest.raises(InferenceServerException) as err:
            await via.infer("identity_fp32", [inp])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shared memory is not available through the gateway" in err.value.message()
    finally:
        for owner in owners:
            await owner.unregister_system_shared_memory("victim")
            await owner.close()
        shm.destroy_shared_memory_region(region)
