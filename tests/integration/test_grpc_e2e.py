"""An unmodified tritonclient.grpc session through the gateway gives what Triton itself gives."""

from __future__ import annotations

from collections import Counter
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.triton.launcher import TritonServer
from tests.support.patches import sparse_patches
from tests.support.shm import registered_region

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
    assert seen == ["0", "1", "2"]


# -- ModelStreamInfer is one stream to one backend --------------------------------------------------------


def _request(model: str, request_id: str, **kw: int) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    if model == "repeat_fp32":
        tensors = {
            "INPUT0": np.arange(3, dtype=np.float32) + kw.get("base", 0),
            "REPEAT": np.array([kw.get("n", 3)], np.int32),
            "DELAY_MS": np.array([kw.get("delay_ms", 0)], np.int32),
        }
    else:
        batch = np.asarray(
            sparse_patches(kw.get("batch", 1), seed=int(request_id) if request_id.isdigit() else 0)
        )
        tensors = {"main_input" if model == MODEL else "INPUT0": batch}
    for name, array in tensors.items():
        dtype = "INT32" if array.dtype == np.int32 else "FP32"
        request.inputs.add(name=name, datatype=dtype, shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


Answer = tuple[str, str, dict[str, np.ndarray]]


async def _stream(
    address: str, requests: list[service_pb2.ModelInferRequest], token: str | None = None
) -> list[Answer]:
    """(id, "error" or "", outputs) of every answer, in the order they came."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )

        async def each() -> Any:
            for request in requests:
                yield request

        answers = []
        async for answer in call(each(), timeout=60, metadata=metadata):
            response = answer.infer_response
            outputs = {
                o.name: np.frombuffer(raw, np.int32 if o.datatype == "INT32" else np.float32).reshape(o.shape)
                for o, raw in zip(response.outputs, response.raw_output_contents, strict=True)
            }
            answers.append((response.id, "error" if answer.error_message else "", outputs))
        return answers


def _assert_same(got: list[Answer], want: list[Answer]) -> None:
    assert [(i, e, sorted(o)) for i, e, o in got] == [(i, e, sorted(o)) for i, e, o in want]
    for (_, _, a), (_, _, b) in zip(got, want, strict=True):
        for name in a:  # two facilities' CNN results differ in the last bits
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


# Models of different speeds on one stream. Decoupled models are streamed on their own below:
# Triton 2.51 aborts (a proto_buffer_writer assertion) when a decoupled model's answers race
# another model's on one stream's writer, with or without a gateway in between.
MIXED = [
    _request(MODEL, "0", batch=64),  # slow: about 20 ms of CNN
    _request("identity_fp32", "1"),
    _request("identity_fp32", "3"),
    _request(MODEL, "5", batch=2),
]


def _by_request(answers: list[Answer]) -> dict[str, list[Answer]]:
    """Each request's answers in the order they came (Triton orders decoupled answers per request)."""
    out: dict[str, list[Answer]] = {}
    for answer in answers:
        out.setdefault(answer[0], []).append(answer)
    return out


async def test_stream_answers_equal_a_direct_stream_in_order(
    gateway: Gateway, tritons: list[TritonServer]
) -> None:
    direct = await _stream(tritons[0].grpc_address, MIXED)
    assert [a[0] for a in direct] == ["0", "1", "3", "5"]  # Triton keeps request order
    for _ in range(3):
        via = await _stream(f"127.0.0.1:{gateway.grpc_port}", MIXED)
        _assert_same(via, direct)


async def test_decoupled_model_answers_several_times_and_is_recorded_once(
    gateway: Gateway, tritons: list[TritonServer]
) -> None:
    before = len(gateway.recorder.events)  # type: ignore[attr-defined]
    requests = [_request("repeat_fp32", "a", n=4), _request("repeat_fp32", "b", n=2, base=10)]
    requests.append(_request("repeat_fp32", "c", n=0))  # decoupled, and no answer at all
    via = _by_request(await _stream(f"127.0.0.1:{gateway.grpc_port}", requests))
    direct = _by_request(await _stream(tritons[0].grpc_address, requests))
    assert sorted(via) == sorted(direct) == ["a", "b"]
    for request_id in via:
        _assert_same(via[request_id], direct[request_id])
    assert [int(o["INDEX"].ravel()[0]) for _, _, o in via["a"]] == [0, 1, 2, 3]
    events = list(gateway.recorder.events)[before:]  # type: ignore[attr-defined]
    assert [(e.model, e.version_served) for e in events] == [("repeat_fp32", "1")] * 2  # c: no answer


async def test_refusals_keep_request_order_on_the_stream(gateway: Gateway) -> None:
    requests = [
        _request(MODEL, "0", batch=64),
        _request("no_such_model", "1"),
        _request("identity_fp32", "2"),
    ]
    via = await _stream(f"127.0.0.1:{gateway.grpc_port}", requests)
    assert [(a[0], a[1]) for a in via] == [("0", ""), ("1", "error"), ("2", "")]


async def test_one_stream_uses_one_backend(gateway: Gateway) -> None:
    before = len(gateway.recorder.events)  # type: ignore[attr-defined]
    requests = [_request("identity_fp32", str(i)) for i in range(20)]
    via = await _stream(f"127.0.0.1:{gateway.grpc_port}", requests)
    assert [a[0] for a in via] == [str(i) for i in range(20)]
    events = list(gateway.recorder.events)[before:]  # type: ignore[attr-defined]
    assert len(events) == 20
    assert len({e.backend_id for e in events}) == 1


async def test_shared_memory_another_client_registered_is_not_reachable(
    clients: Any, tritons: list[TritonServer]
) -> None:
    """A region a local client registered on the facility's Triton: direct use works, via us never."""
    via, _ = clients
    secret = np.full((1, 48, 48, 1), 7.0, np.float32)
    owners = [tc.InferenceServerClient(t.grpc_address) for t in tritons]
    async with registered_region(owners, "victim", "/sonic_e2e_victim_grpc", secret):
        inp = tc.InferInput("INPUT0", [1, 48, 48, 1], "FP32")
        inp.set_shared_memory("victim", secret.nbytes)
        direct = await owners[0].infer("identity_fp32", [inp])
        assert direct.as_numpy("OUTPUT0")[0, 0] == 7.0 * 48 * 48  # the premise: Triton reads the region
        with pytest.raises(InferenceServerException) as err:
            await via.infer("identity_fp32", [inp])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shared memory is not available through the gateway" in err.value.message()


@pytest.mark.parametrize(("model", "version"), [("no_such_model", ""), ("identity_fp32", "9")])
async def test_statistics_of_an_unknown_model_is_invalid_argument_as_triton_says(
    clients: Any, model: str, version: str
) -> None:
    via, direct = clients
    codes = []
    for client in (via, direct):
        with pytest.raises(InferenceServerException) as err:
            await client.get_inference_statistics(model, version)
        codes.append(err.value.status())
    assert codes == ["StatusCode.INVALID_ARGUMENT"] * 2


@pytest.mark.parametrize(
    "tail",
    [b"\x2a\x03\x0a\xff\xff", b"\x2a\x0a\x0a\x01x\x2a\x05\x32\x03\xff\xff\xff", b"\x2a\x03\x0a\x01\xff"],
    ids=["later-input-framing", "contents-varints", "later-input-name-utf8"],
)
async def test_garbage_inside_a_later_input_is_invalid_argument_not_internal(
    gateway: Gateway, tritons: list[TritonServer], tail: bytes
) -> None:
    raw = _request("identity_fp32", "g").SerializeToString() + tail
    codes = []
    for address in (f"127.0.0.1:{gateway.grpc_port}", tritons[0].grpc_address):
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(raw, timeout=10)
            codes.append(err.value.code())
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL]  # Triton: "Unable to parse"
