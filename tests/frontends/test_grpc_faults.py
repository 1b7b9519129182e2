"""The gRPC frontend against scripted fake backends: errors, slow and failing facilities."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.config import load_settings
from tests.support.fake_triton import FakeTriton
from tests.support.net import free_port


@pytest.fixture
async def fakes() -> AsyncIterator[list[FakeTriton]]:
    backends = [FakeTriton("a"), FakeTriton("b")]
    for backend in backends:
        await backend.start()
    yield backends
    for backend in backends:
        await backend.stop()


async def _gateway(addresses: list[str]) -> Gateway:
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        backends=[{"facility": f"f{i}", "grpc": a} for i, a in enumerate(addresses)],
        routing={"health_interval_s": 60},  # probes only at start: the tests drive health themselves
        auth={"enabled": False},
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    return gateway


@pytest.fixture
async def gw(fakes: list[FakeTriton]) -> AsyncIterator[Gateway]:
    gateway = await _gateway([f.address for f in fakes])
    yield gateway
    await gateway.stop(grace_s=0)


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[tc.InferenceServerClient]:
    c = tc.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
    yield c
    await c.close()


def _inputs() -> list[tc.InferInput]:
    x = np.zeros((3, 2), np.float32)
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


async def test_backend_error_is_passed_through_with_code_and_message(
    fakes: list[FakeTriton], client: tc.InferenceServerClient
) -> None:
    for f in fakes:
        f.script.infer_error = (grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape for input 'x'")
    with pytest.raises(InferenceServerException) as err:
        await client.infer("toy", _inputs())
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "unexpected shape for input 'x'" in err.value.message()


async def test_unknown_model_is_not_found_and_names_it(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as err:
        await client.infer("no_such_model", _inputs())
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert "'no_such_model'" in err.value.message()
    assert "toy" in err.value.message()


async def test_malformed_request_is_invalid_argument_and_gateway_keeps_serving(
    gw: Gateway, client: tc.InferenceServerClient
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await raw(b"\x0a\xff\xff")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed request" in (err.value.details() or "")
    result = await client.infer("toy", _inputs())
    assert result.as_numpy("SERVED_BY") is not None


async def test_connection_refused_is_retried_once_on_another_backend(fakes: list[FakeTriton]) -> None:
    dead = f"127.0.0.1:{free_port()}"
    gateway = await _gateway([dead, fakes[0].address])
    # Pretend the dead one looked healthy at the last probe: the request must still get through.
    dead_id = next(b for b in gateway.registry.snapshot.backends.values() if b.grpc_address == dead).id
    gateway.registry.update_health(dead_id, True, {"toy": frozenset({"1"})})
    try:
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            for _ in range(6):
                gateway.registry.update_health(dead_id, True, {"toy": frozenset({"1"})})
                result = await client.infer("toy", _inputs())
                assert result.as_numpy("SERVED_BY")[0] == b"a"
        assert fakes[0].script.infer_count == 6
    finally:
        await gateway.stop(grace_s=0)


async def test_no_backend_up_is_unavailable(fakes: list[FakeTriton]) -> None:
    gateway = await _gateway([f"127.0.0.1:{free_port()}"])
    try:
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            assert not await client.is_server_ready()
            with pytest.raises(InferenceServerException) as err:
                await client.infer("toy", _inputs())
        # Nothing ever reported a model: the user is told that no facility serves it.
        assert err.value.status() == "StatusCode.NOT_FOUND"
        gateway.registry.update_health(
            next(iter(gateway.registry.snapshot.backends)), False, {"toy": frozenset({"1"})}
        )
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            with pytest.raises(InferenceServerException) as err:
                await client.infer("toy", _inputs())
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert "no healthy backend" in err.value.message()
    finally:
        await gateway.stop(grace_s=0)


async def test_client_deadline_reaches_the_backend(
    fakes: list[FakeTriton], client: tc.InferenceServerClient
) -> None:
    for f in fakes:
        f.script.infer_delay_s = 2.0
    with pytest.raises(InferenceServerException) as err:
        await client.infer("toy", _inputs(), client_timeout=0.3)
    assert err.value.status() == "StatusCode.DEADLINE_EXCEEDED"


async def test_slow_backend_does_not_block_others(
    fakes: list[FakeTriton], client: tc.InferenceServerClient
) -> None:
    fakes[0].script.infer_delay_s = 1.0

    async def staggered(i: int) -> bytes:
        await asyncio.sleep(0.05 * i)
        result = await client.infer("toy", _inputs())
        return bytes(result.as_numpy("SERVED_BY")[0])

    served = await asyncio.gather(*(staggered(i) for i in range(10)))
    # least-loaded: once 'a' holds a slow request, the fast 'b' (idle between requests) gets the rest
    assert served.count(b"a") <= 1


async def test_metadata_forwarding_keeps_the_client_token_away_from_facilities(
    fakes: list[FakeTriton], client: tc.InferenceServerClient
) -> None:
    await client.infer(
        "toy",
        _inputs(),
        headers={"authorization": "Bearer secret", "traceparent": "00-abc-def-01", "x-request-id": "r1"},
    )
    seen = next(s for f in fakes for s in f.script.seen_metadata)
    assert "authorization" not in seen
    assert seen["traceparent"] == "00-abc-def-01"
    assert seen["x-request-id"] == "r1"


async def test_stream_infer_answers_each_request_and_reports_errors_in_stream(
    client: tc.InferenceServerClient,
) -> None:
    async def requests() -> AsyncIterator[dict[str, object]]:
        yield {"model_name": "toy", "inputs": _inputs(), "request_id": "1"}
        yield {"model_name": "missing", "inputs": _inputs(), "request_id": "2"}
        yield {"model_name": "toy", "inputs": _inputs(), "request_id": "3"}

    answers = []
    async for result, error in client.stream_infer(requests()):
        answers.append((result.get_response().id if result else None, str(error) if error else None))
    assert [a for a, _ in answers] == ["1", None, "3"]  # request order, the refusal in its place
    assert "'missing'" in str(answers[1][1])


async def test_one_stream_goes_to_one_backend(
    fakes: list[FakeTriton], client: tc.InferenceServerClient
) -> None:
    async def requests() -> AsyncIterator[dict[str, object]]:
        for i in range(12):
            yield {"model_name": "toy", "inputs": _inputs(), "request_id": str(i)}

    served = [bytes(r.as_numpy("SERVED_BY")[0]) async for r, _ in client.stream_infer(requests())]
    assert len(served) == 12
    assert len(set(served)) == 1
    assert sorted(f.script.infer_count for f in fakes) == [0, 12]
    assert sum(len(f.script.seen_metadata) for f in fakes) == 1  # one backend stream, opened once


async def test_shared_memory_and_model_control_are_refused_with_a_reason(gw: Gateway) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        status = channel.unary_unary(
            "/inference.GRPCInferenceService/SystemSharedMemoryStatus",
            request_serializer=service_pb2.SystemSharedMemoryStatusRequest.SerializeToString,
            response_deserializer=service_pb2.SystemSharedMemoryStatusResponse.FromString,
        )
        assert len((await status(service_pb2.SystemSharedMemoryStatusRequest())).regions) == 0
        register = channel.unary_unary(
            "/inference.GRPCInferenceService/SystemSharedMemoryRegister",
            request_serializer=service_pb2.SystemSharedMemoryRegisterRequest.SerializeToString,
            response_deserializer=service_pb2.SystemSharedMemoryRegisterResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await register(service_pb2.SystemSharedMemoryRegisterRequest(name="r", key="/k", byte_size=8))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "cannot cross the network" in (err.value.details() or "")
        load = channel.unary_unary(
            "/inference.GRPCInferenceService/RepositoryModelLoad",
            request_serializer=service_pb2.RepositoryModelLoadRequest.SerializeToString,
            response_deserializer=service_pb2.RepositoryModelLoadResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await load(service_pb2.RepositoryModelLoadRequest(model_name="toy"))
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_provenance_tags_are_recorded(gw: Gateway, client: tc.InferenceServerClient) -> None:
    await client.infer(
        "toy", _inputs(), headers={"sonic-job-id": "job-9", "sonic-dataset": "protodune-sp:np04_run5387"}
    )
    event = gw.recorder.events[-1]  # type: ignore[attr-defined]
    assert (event.job_id, event.dataset, event.model, event.version_served, event.inferences) == (
        "job-9",
        "protodune-sp:np04_run5387",
        "toy",
        "1",
        3,
    )


def _shm_inputs() -> list[tc.InferInput]:
    inp = tc.InferInput("x", [3, 2], "FP32")
    inp.set_shared_memory("victim_region", 24)  # a region some local client registered at the facility
    return [inp]


async def test_inference_naming_shared_memory_is_refused_and_never_forwarded(
    fakes: list[FakeTriton], client: tc.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException) as err:
        await client.infer("toy", _shm_inputs())
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shared memory is not available through the gateway" in err.value.message()
    output = tc.InferRequestedOutput("SERVED_BY")
    output.set_shared_memory("victim_region", 64)
    with pytest.raises(InferenceServerException) as err:
        await client.infer("toy", _inputs(), outputs=[output])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"

    async def requests() -> AsyncIterator[dict[str, object]]:
        yield {"model_name": "toy", "inputs": _shm_inputs(), "request_id": "s"}

    answers = [(r, e) async for r, e in client.stream_infer(requests())]
    assert len(answers) == 1
    assert answers[0][0] is None
    assert "shared memory is not available" in str(answers[0][1])
    assert sum(f.script.infer_count for f in fakes) == 0


async def test_huge_model_name_is_not_found_with_a_bounded_message(client: tc.InferenceServerClient) -> None:
    name = "m" * 100_000
    calls = [
        lambda: client.infer(name, _inputs()),
        lambda: client.get_model_metadata(name),
        lambda: client.get_model_config(name),
    ]
    for call in calls:
        with pytest.raises(InferenceServerException) as err:
            await call()
        assert err.value.status() == "StatusCode.NOT_FOUND"  # not the client's RESOURCE_EXHAUSTED
        assert len(err.value.message()) < 1000
        assert "100000 characters" in err.value.message()


@pytest.mark.parametrize("char", ["x", "é", "%"])
def test_status_details_are_cut_to_fit_a_header(char: str) -> None:
    from urllib.parse import quote

    from gateway.frontends.grpc.service import _bounded

    cut = _bounded("name " + char * 100_000)
    assert cut.endswith("(cut; 100005 characters in all)")
    assert len(quote(cut, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")) <= 4096  # as grpc encodes it
    assert _bounded("short message") == "short message"
