"""Rate limits per subject and per group, on both frontends, answered with a retry-after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.config import LimitSettings, load_settings
from gateway.core.identity import Principal
from gateway.errors import ResourceExhausted
from gateway.limits.limiter import RateLimiter
from gateway.state.memory import InMemoryState
from tests.support.clock import FakeClock
from tests.support.fake_triton import FakeTriton

ALICE = Principal("https://iss", "alice", groups=frozenset({"/dune/reco", "/dune"}))
BOB = Principal("https://iss", "bob", groups=frozenset({"/dune/reco"}))


def _limiter(clock: FakeClock | None = None, **limits: object) -> RateLimiter:
    return RateLimiter(LimitSettings.model_validate(limits), InMemoryState(clock=clock or FakeClock()))


async def test_no_limits_configured_admits_everything() -> None:
    limiter = _limiter()
    assert not limiter.enabled
    for _ in range(100):
        await limiter.admit(ALICE, 10_000, 10**9)


async def test_each_subject_has_its_own_bucket_and_overrides_apply() -> None:
    clock = FakeClock()
    limiter = _limiter(
        clock,
        default={"inferences_per_s": 1, "burst_s": 10},
        subjects={"bob": {"inferences_per_s": 2, "burst_s": 10}},
    )
    await limiter.admit(ALICE, 10, 0)
    with pytest.raises(ResourceExhausted, match="rate limit reached for subject 'alice'") as err:
        await limiter.admit(ALICE, 1, 0)
    assert err.value.retry_after_s == 1.0  # one inference at 1/s
    await limiter.admit(BOB, 20, 0)  # bob's own, larger bucket: alice's use does not count
    clock.step(0.75)
    with pytest.raises(ResourceExhausted) as err:
        await limiter.admit(ALICE, 1, 0)
    assert err.value.retry_after_s == 0.25  # what is left of the wait, not a fresh one
    clock.step(0.25)
    await limiter.admit(ALICE, 1, 0)  # the refused calls took nothing: exactly on time it passes


async def test_a_group_bucket_is_shared_by_its_members() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, groups={"/dune/reco": {"bytes_per_s": 1000, "burst_s": 1}})
    await limiter.admit(ALICE, 1, 600)
    with pytest.raises(ResourceExhausted, match=r"groups \['/dune/reco'\]") as err:
        await limiter.admit(BOB, 1, 600)
    assert err.value.retry_after_s == 0.2  # 200 bytes short at 1000 bytes/s
    clock.step(0.2)
    await limiter.admit(BOB, 1, 600)
    await limiter.admit(Principal("https://iss", "carol"), 1, 10**6)  # not a member: no limit


@pytest.fixture
async def limited() -> AsyncIterator[Gateway]:
    fake = FakeTriton("a")
    await fake.start()
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        backends=[{"facility": "a", "grpc": fake.address, "http": "127.0.0.1:1"}],
        routing={"health_interval_s": 60},
        auth={"enabled": False},
        limits={"default": {"inferences_per_s": 0.5, "burst_s": 6}},  # 3 inferences, then 1 per 2 s
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    yield gateway
    await gateway.stop(grace_s=0)
    await fake.stop()


async def test_grpc_answers_resource_exhausted_with_retry_after(limited: Gateway) -> None:
    x = np.zeros((1, 2), np.float32)
    inp = tc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    async with tc.InferenceServerClient(f"127.0.0.1:{limited.grpc_port}") as client:
        for _ in range(3):
            await client.infer("toy", [inp])
        with pytest.raises(InferenceServerException) as err:
            await client.infer("toy", [inp])
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "retry in" in err.value.message()
    # The retry-after trailing metadata, as sonic_client reads it.
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}")
    try:
        request = service_pb2.ModelInferRequest(model_name="toy")
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(request.SerializeToString())
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        trailing = dict(await call.trailing_metadata())
        assert 1.0 < float(trailing["retry-after"]) <= 2.0
    finally:
        await channel.close()


async def test_http_answers_429_with_retry_after(limited: Gateway) -> None:
    await limited.dataplane.admit(Principal("", "anonymous"), 3, 0)  # the shared bucket, emptied
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0, 0]}]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{limited.http_port}") as client:
        backend_id = next(iter(limited.registry.snapshot.backends))
        limited.registry.update_health(backend_id, True, {"toy": frozenset({"1"})})
        answer = await client.post("/v2/models/toy/infer", json=body)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "2"
    assert "rate limit reached" in answer.json()["error"]
