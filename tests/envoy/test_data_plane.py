"""The Envoy data plane in front of real Tritons: fast path, fall-through answers, policy, usage.

Each test starts a gateway whose public ports are Envoy's; which path served a request is read from
Envoy's own counters (a per-model cluster counts only fast-path requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.auth.dev_issuer import issuer_settings  # noqa: F401 - keeps the dev issuer importable
from gateway.core.recording import InMemoryRecorder
from gateway.envoy.controlplane import USAGE_WRITE_FAILURES
from gateway.envoy.render import ROUTES_GRPC, grpc_cluster, http_cluster
from gateway.envoy.view import DataPlaneView, Endpoint, ModelView
from gateway.errors import GatewayError, status_of
from gateway.triton.launcher import TritonServer
from tests.auth.helpers import DROP, TestIssuer
from tests.envoy.support import envoy_gateway, envoy_stat, serving_jwks
from tests.support.waiting import eventually

pytestmark = pytest.mark.triton

MODEL = "identity_fp32"


def _cluster_stat(model: str, grpc: bool = True) -> str:
    key = ModelView(model, (), (), None, ()).key
    name = (
        grpc_cluster(ModelView(model, (), (), None, ()))
        if grpc
        else http_cluster(ModelView(model, (), (), None, ()))
    )
    assert key in name
    return f"^cluster\\.{name}\\.upstream_rq_total$"


def _patches(n: int = 3) -> np.ndarray:
    return np.arange(n * 48 * 48, dtype=np.float32).reshape(n, 48, 48, 1) / 1000.0


def _grpc_inputs(x: np.ndarray) -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


Edge = tuple[Gateway, InMemoryRecorder, TestIssuer]


def _view(gateway: Gateway, model: str = MODEL) -> ModelView:
    """What the control plane last published for ``model``."""
    assert gateway.envoy is not None
    return next(m for m in gateway.envoy.view.models if m.name == model)


@pytest.fixture
async def edge(tritons: list[TritonServer], tmp_path: Path) -> AsyncIterator[Edge]:
    issuer = TestIssuer("http://127.0.0.1/issuer")
    with serving_jwks(issuer) as jwks_uri:
        gateway, recorder = envoy_gateway(
            tritons, jwks_uri, issuer, database_url=f"sqlite:///{tmp_path}/c.db"
        )
        await gateway.start()
        try:
            await eventually(
                lambda: bool(gateway.registry.snapshot.candidates(MODEL)), what="backends to become healthy"
            )
            await eventually(lambda: bool(gateway.envoy and gateway.envoy.view.models), what="first push")
            yield gateway, recorder, issuer
        finally:
            await gateway.stop(grace_s=1)


async def _infer(
    gateway: Gateway, headers: dict[str, str], model: str = MODEL, version: str = ""
) -> np.ndarray:
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        result = await client.infer(model, _grpc_inputs(_patches()), model_version=version, headers=headers)
        out = result.as_numpy("OUTPUT0")
        assert out is not None
        return out


async def _refusal(
    gateway: Gateway, headers: dict[str, str], model: str = MODEL, version: str = ""
) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        await _infer(gateway, headers, model, version)
    return info.value


async def test_fast_path_serves_bit_identical_and_records_usage(
    edge: Edge, tritons: list[TritonServer]
) -> None:
    gateway, recorder, issuer = edge
    token = issuer.token()
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    headers = {"authorization": f"Bearer {token}", "sonic-job-id": "job-7", "sonic-dataset": "np04%20run"}
    got = await _infer(gateway, headers)
    async with grpcclient.InferenceServerClient(tritons[0].grpc_address) as direct:
        expected = (await direct.infer(MODEL, _grpc_inputs(_patches()))).as_numpy("OUTPUT0")
    assert expected is not None
    assert got.tobytes() == expected.tobytes()
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1  # served by Envoy, not Python

    await eventually(lambda: bool(recorder.events), what="the fast-path usage record")
    event = recorder.events[-1]
    assert (event.model, event.subject, event.issuer) == (MODEL, "alice", issuer.issuer)
    assert (event.job_id, event.dataset, event.inferences) == ("job-7", "np04%20run", 3)
    assert event.version_served == "1"
    assert event.backend_id in gateway.registry.snapshot.backends
    assert event.facility in {"lab", "hpc"}


async def test_rest_fast_path_with_binary_tensors(edge: Edge) -> None:
    gateway, recorder, issuer = edge
    before = envoy_stat(gateway, _cluster_stat(MODEL, grpc=False))
    x = _patches(2)
    inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    token = issuer.token()

    def infer() -> httpclient.InferResult:
        # In a thread: the control plane answering Envoy's key and verdict calls runs on this loop.
        client = httpclient.InferenceServerClient(f"127.0.0.1:{gateway.http_port}")
        try:
            return client.infer(MODEL, [inp], headers={"authorization": f"Bearer {token}"})
        finally:
            client.close()

    result = await asyncio.to_thread(infer)
    # The fast path answers with the request id, as the Python path does.
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"http://127.0.0.1:{gateway.http_port}/v2/models/{MODEL}/infer",
            json={"inputs": [{"name": "INPUT0", "shape": [1, 48, 48, 1], "datatype": "FP32",
                              "data": [0.5] * 2304}]},
            headers={"authorization": f"Bearer {token}", "x-request-id": "job-7-req-1"},
        )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-request-id"] == "job-7-req-1"
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    np.testing.assert_array_equal(out.ravel(), x.reshape(2, -1).sum(axis=1))
    assert envoy_stat(gateway, _cluster_stat(MODEL, grpc=False)) == before + 2
    await eventually(lambda: any(e.inferences == 2 for e in recorder.events), what="the REST usage record")


# Tokens the gateway's validator refuses; through Envoy each must get exactly the answer the Python
# validator gives, and none may reach a backend.
def _bad_tokens(issuer: TestIssuer) -> dict[str, str]:
    other = TestIssuer(issuer.issuer, kid="key-1")
    from tests.auth.helpers import ec_key, sign_raw

    good = issuer.token()
    head, payload, sig = good.split(".")
    return {
        "expired": issuer.token(iat=1_000_000, nbf=1_000_000, exp=1_000_600),
        "no scope": issuer.token(scope="storage.read"),
        "no wlcg.ver": issuer.token(**{"wlcg.ver": DROP}),
        "wrong audience": issuer.token(aud="https://elsewhere.test"),
        "lifetime too long": issuer.token(exp=int(__import__("time").time()) + 7 * 86400),
        "issued in the future": issuer.token(iat=int(__import__("time").time()) + 3600),
        "bad signature": issuer.token(key=ec_key(3)),
        "unknown kid": issuer.token(header=issuer.header(kid="key-9")),
        "header jku": issuer.token(header=issuer.header(jku="https://evil.test/jwks")),
        "non-canonical signature": f"{head}.{payload}.{sig}x",
        "duplicate sub": sign_raw(
            b'{"alg":"ES256","typ":"JWT","kid":"key-1"}',
            b'{"iss":"%s","sub":"alice","sub":"mallory","aud":"https://sonic-gateway.test","iat":%d,'
            b'"exp":%d,"scope":"compute.read","wlcg.ver":"1.0"}'
            % (issuer.issuer.encode(), int(__import__("time").time()), int(__import__("time").time()) + 600),
            other.key,
            "ES256",
        ),
        "alg none": f"{head}.{payload}.",
    }


def _rejections(gateway: Gateway) -> float:
    """Refused tokens the gateway counted (every issuer and reason)."""
    return sum(
        s.value
        for m in gateway.metrics_registry.collect()
        for s in m.samples
        if s.name == "sonic_gateway_token_validations_total" and s.labels.get("outcome") == "rejected"
    )


async def test_every_refused_token_gets_the_python_answer_and_no_backend(edge: Edge) -> None:
    gateway, _, issuer = edge
    for label, token in _bad_tokens(issuer).items():
        before = envoy_stat(gateway, _cluster_stat(MODEL))
        authorization = f"Bearer {token}"
        counted = _rejections(gateway)
        try:
            principal = await gateway.authenticator.authenticate(authorization)
            gateway.authorizer.authorize_infer(principal, MODEL)
        except Exception as exc:  # the validator's own verdict, asked directly
            expected = exc
        else:
            raise AssertionError(f"{label}: the validator accepts this token; the corpus is wrong")
        direct, counted = _rejections(gateway) - counted, _rejections(gateway)
        error = await _refusal(gateway, {"authorization": authorization})
        # Envoy's verdict request is quiet: through Envoy a refusal is counted as often as directly.
        assert _rejections(gateway) - counted == direct, label
        assert isinstance(expected, GatewayError), label
        assert error.status() == f"StatusCode.{status_of(expected).grpc_code}", label
        assert expected.message in (error.message() or ""), label
        assert token not in (error.message() or ""), label
        assert envoy_stat(gateway, _cluster_stat(MODEL)) == before, f"{label} reached a backend"


async def test_client_set_internal_headers_gain_nothing(edge: Edge) -> None:
    gateway, _, issuer = edge
    forged = {"x-sonic-fast": "1", "x-sonic-model": MODEL, "x-sonic-version": "1"}
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    error = await _refusal(gateway, forged)
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    gateway.authorizer.set_model_groups(lambda model: frozenset({"/cms"}) if model == MODEL else None)  # type: ignore[attr-defined]
    assert gateway.envoy is not None
    gateway.envoy.wake()
    await eventually(lambda: gateway.envoy is not None and _view(gateway).groups is not None, what="the push")
    error = await _refusal(gateway, {"authorization": f"Bearer {issuer.token()}", **forged})
    assert error.status() == "StatusCode.PERMISSION_DENIED"
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before


async def test_model_groups_reach_envoy_and_decide_the_path(edge: Edge) -> None:
    gateway, _, issuer = edge
    gateway.authorizer.set_model_groups(lambda model: frozenset({"/cms"}) if model == MODEL else None)  # type: ignore[attr-defined]
    await eventually(lambda: gateway.envoy is not None and _view(gateway).groups == ("/cms",), what="push")
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    error = await _refusal(gateway, {"authorization": f"Bearer {issuer.token()}"})  # groups: /dune
    assert error.status() == "StatusCode.PERMISSION_DENIED"
    assert "/cms" in (error.message() or "")
    await _infer(gateway, {"authorization": f"Bearer {issuer.token(**{'wlcg.groups': ['/cms']})}"})
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1


async def test_only_a_version_the_backends_serve_takes_the_fast_path(edge: Edge) -> None:
    gateway, _, issuer = edge
    assert _view(gateway).versions == ("1",)
    auth = {"authorization": f"Bearer {issuer.token()}"}
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    await _infer(gateway, auth, version="1")
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1
    # Not served, or a list that holds a served one: Python answers, no backend is asked by Envoy.
    for version in ("7", "1,2", ",1", "1|"):
        error = await _refusal(gateway, auth, version=version)
        assert version in (error.message() or ""), error.message()
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1


async def test_shared_memory_is_refused_on_the_envoy_path(edge: Edge) -> None:
    gateway, _, issuer = edge
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    x = _patches(1)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_shared_memory("someone-elses-region", x.nbytes)
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        with pytest.raises(InferenceServerException) as info:
            await client.infer(MODEL, [inp], headers={"authorization": f"Bearer {issuer.token()}"})
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "shared memory" in (info.value.message() or "").lower()
    body = {
        "inputs": [
            {
                "name": "INPUT0",
                "shape": [1, 48, 48, 1],
                "datatype": "FP32",
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 9216},
            }
        ]
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"http://127.0.0.1:{gateway.http_port}/v2/models/{MODEL}/infer",
            json=body,
            headers={"authorization": f"Bearer {issuer.token()}"},
        )
    assert answer.status_code == 400
    # Compressed, the same body cannot be read by Envoy: it goes to Python, which decompresses it.
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"http://127.0.0.1:{gateway.http_port}/v2/models/{MODEL}/infer",
            content=gzip.compress(json.dumps(body).encode()),
            headers={"authorization": f"Bearer {issuer.token()}", "content-encoding": "gzip"},
        )
    assert answer.status_code == 400, answer.text
    assert "shared memory" in answer.text.lower()
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before
    assert envoy_stat(gateway, _cluster_stat(MODEL, grpc=False)) == 0


async def test_a_large_message_naming_a_region_is_refused_and_a_chance_match_is_served(
    edge: Edge, tritons: list[TritonServer]
) -> None:
    """Envoy reads each tensor's parameters, whatever the message's size: a large message naming a
    region is refused too, while tensor bytes that merely contain the key's letters are no parameter
    and take the fast path, served as Triton serves them."""
    gateway, _, issuer = edge
    headers = {"authorization": f"Bearer {issuer.token()}"}
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    region = grpcclient.InferInput("INPUT0", [1, 48, 48, 1], "FP32")
    region.set_shared_memory("someone-elses-region", 9216)
    padding = grpcclient.InferInput("PADDING", [1, 48, 48, 10], "FP32")  # ~92 KB of raw tensor bytes
    padding.set_data_from_numpy(np.zeros((1, 48, 48, 10), dtype=np.float32))
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        with pytest.raises(InferenceServerException) as info:
            await client.infer(MODEL, [region, padding], headers=headers)
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "shared memory" in (info.value.message() or "").lower()
        raw = bytearray(9216)
        raw[100:113] = b"shared_memory"
        x = np.frombuffer(bytes(raw), dtype=np.float32).reshape(1, 48, 48, 1)
        result = await client.infer(MODEL, _grpc_inputs(x), headers=headers)
    async with grpcclient.InferenceServerClient(tritons[0].grpc_address) as direct:
        expected = (await direct.infer(MODEL, _grpc_inputs(x))).as_numpy("OUTPUT0")
    got = result.as_numpy("OUTPUT0")
    assert got is not None
    assert expected is not None
    assert got.tobytes() == expected.tobytes()
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1


async def test_a_model_name_sent_twice_is_routed_by_the_one_triton_reads(edge: Edge) -> None:
    """Protobuf's last value wins, in Triton's parser and in Envoy's policy filter alike: a request
    whose first model_name is a servable model but whose last is not is never sent to a backend as
    the first."""
    gateway, _, issuer = edge
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    x = _patches(1)
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=list(x.shape))
    assert tensor is not None
    request.raw_input_contents.append(x.tobytes())
    other = service_pb2.ModelInferRequest(model_name="no_such_model")
    payload = request.SerializeToString() + other.SerializeToString()  # model_name twice, last wins
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=service_pb2.ModelInferResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(payload, metadata=(("authorization", f"Bearer {issuer.token()}"),))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    assert "no_such_model" in (info.value.details() or "")
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before


async def test_usage_lines_envoy_could_not_write_are_reported_not_silent(
    edge: Edge, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, _, issuer = edge
    assert gateway.envoy is not None
    await _infer(gateway, {"authorization": f"Bearer {issuer.token()}"})
    real = await gateway.envoy.process.counters(USAGE_WRITE_FAILURES)
    assert set(real) == {"filesystem.write_failed", "filesystem.reopen_failed"}
    assert set(real.values()) == {0}  # the real counters, read the way the check reads them
    await gateway.envoy._check_usage_writes()
    assert "usage log" not in caplog.text

    async def failing(pattern: str) -> dict[str, int]:
        return {name: 3 for name in real}

    monkeypatch.setattr(gateway.envoy.process, "counters", failing)
    with caplog.at_level("ERROR", logger="gateway.envoy"):
        await gateway.envoy._check_usage_writes()
        await gateway.envoy._check_usage_writes()  # said once, not on every check
    assert caplog.text.count("envoy failed 6 times to write or reopen the usage log") == 1


async def test_the_usage_log_rotates_under_the_real_envoy_and_loses_no_record(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, recorder, issuer = edge
    assert gateway.envoy is not None
    follower = gateway.envoy.usage_log
    monkeypatch.setattr(follower, "rotate_bytes", 1)  # every line read starts a rotation
    jobs = [f"rotation-{i}" for i in range(2)]
    for job in jobs:
        done = follower.rotations + 1
        await _infer(gateway, {"authorization": f"Bearer {issuer.token()}", "sonic-job-id": job})
        # Envoy wrote the line, the follower read it, renamed the file, Envoy reopened it.
        await eventually(lambda: follower.rotations >= done, what="a usage-log rotation")  # noqa: B023

    def recorded() -> list[str | None]:
        return [e.job_id for e in recorder.events if (e.job_id or "").startswith("rotation-")]

    await eventually(lambda: len(recorded()) == len(jobs), what="every rotated request's record")
    assert sorted(recorded()) == jobs  # each once
    assert not follower.rotated.exists()


async def test_lines_a_stopped_control_plane_left_unread_are_recorded_by_the_next_start(
    tritons: list[TritonServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = TestIssuer("http://127.0.0.1/issuer")
    work_dir = tmp_path / "envoy"
    headers = {"authorization": f"Bearer {issuer.token()}"}

    def recorded(recorder: InMemoryRecorder, job: str) -> int:
        return sum(e.requests for e in recorder.events if e.job_id == job)

    with serving_jwks(issuer) as jwks_uri:
        runs = []
        for run in ("first", "second"):
            gateway, recorder = envoy_gateway(
                tritons, jwks_uri, issuer, envoy={"enabled": True, "work_dir": str(work_dir)}
            )
            runs.append(recorder)
            await gateway.start()
            plane = gateway.envoy
            assert plane is not None
            try:
                await eventually(lambda: bool(plane.view.models), what="first push")  # noqa: B023
                await _infer(gateway, {**headers, "sonic-job-id": f"{run}-read"})
                await eventually(lambda: recorded(recorder, f"{run}-read") == 1, what="a record")  # noqa: B023
                if run == "first":
                    # The follower stops reading (as if the control plane had died); Envoy writes on.
                    await plane.usage_log._periodic.stop()
                    await _infer(gateway, {**headers, "sonic-job-id": "first-unread"})
                    monkeypatch.setattr(plane.usage_log, "stop", _no_final_read)
            finally:
                await gateway.stop(grace_s=1)
    first, second = runs
    assert recorded(first, "first-unread") == 0  # Envoy wrote it at exit; no one read it
    assert recorded(second, "first-unread") == 1  # the next start did, once
    assert recorded(second, "first-read") == 0  # and nothing the first run had read


async def _no_final_read(*, remove: bool = False) -> None:
    """A control plane that died does not read the log to its end."""


async def test_internal_routes_and_metrics_are_not_public(edge: Edge) -> None:
    gateway, _, issuer = edge
    token = f"Bearer {issuer.token()}"
    async with httpx.AsyncClient() as http:
        for path in ("/internal/verify", "/metrics"):
            answer = await http.post(f"http://127.0.0.1:{gateway.http_port}{path}", content=token)
            assert answer.status_code == 404, path
        # ...while the control plane gives Envoy its verdicts on loopback.
        control = f"http://127.0.0.1:{gateway.control_http_port}/internal/verify"
        accepted = (await http.post(control, content=token)).text.splitlines()
        forged = (await http.post(control, content=token[:-6] + "AAAAAA")).text.splitlines()
    assert accepted[0] == "ok"
    assert forged == ["no", "5"]


async def test_health_and_consistency_changes_reach_envoy(edge: Edge) -> None:
    gateway, _, issuer = edge
    snapshot = gateway.registry.snapshot
    lab = next(b for b in snapshot.backends.values() if b.facility == "lab")
    gateway.registry.set_excluded({(lab.id, MODEL)})
    assert gateway.envoy is not None
    await eventually(
        lambda: gateway.envoy is not None and {e.facility for e in _view(gateway).grpc} == {"hpc"},
        what="the consistency verdict to reach the rendered view",
    )
    cluster = grpc_cluster(_view(gateway))
    admin = gateway.envoy.process.admin_url

    async def envoy_hosts() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{admin}/clusters", timeout=5)).text

    deadline = asyncio.get_running_loop().time() + 10
    while f"{cluster}::{lab.grpc_address}::" in await envoy_hosts():  # the push reaches Envoy
        assert asyncio.get_running_loop().time() < deadline, "Envoy kept the excluded backend"
        await asyncio.sleep(0.05)
    # Envoy applied it: every request now lands on hpc.
    for _ in range(4):
        await _infer(gateway, {"authorization": f"Bearer {issuer.token()}"})
    hpc_port = next(b for b in snapshot.backends.values() if b.facility == "hpc").grpc_address.split(":")[1]
    assert gateway.envoy is not None
    async with httpx.AsyncClient() as http:
        clusters = (await http.get(f"{gateway.envoy.process.admin_url}/clusters", timeout=5)).text
    name = grpc_cluster(_view(gateway))
    lines = [ln for ln in clusters.splitlines() if ln.startswith(f"{name}::") and "::rq_total::" in ln]
    assert len(lines) == 1, lines
    assert f":{hpc_port}::rq_total::" in lines[0]


async def test_a_request_that_reaches_no_backend_is_retried_on_another_unless_too_large_to_copy(
    edge: Edge,
) -> None:
    gateway, _, issuer = edge
    plane = gateway.envoy
    assert plane is not None
    await plane._sync.stop()  # this test publishes its own views
    with socket.socket() as probe:  # a port nothing listens on: every connection is refused
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    dead = Endpoint("dead/127.0.0.1", "dead", "127.0.0.1", dead_port, 100)  # weighted as the live ones
    live = _view(gateway)
    cluster = grpc_cluster(live)

    def publish(retry_max_request_bytes: int) -> None:
        plane.publisher.static = dataclasses.replace(
            plane.static, retry_max_request_bytes=retry_max_request_bytes
        )
        models = (dataclasses.replace(live, grpc=(dead, *live.grpc)),)
        plane.publish(DataPlaneView(models=models))

    async def hosts() -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{plane.process.admin_url}/clusters", timeout=5)).text

    stat = f"^cluster\\.{cluster}\\."
    headers = {"authorization": f"Bearer {issuer.token()}"}
    # A request larger than what Envoy may copy is sent once: no retry, counted as abandoned.
    publish(retry_max_request_bytes=1024)  # _patches() is 27 KB
    deadline = asyncio.get_running_loop().time() + 10
    while f"{cluster}::127.0.0.1:{dead_port}::" not in await hosts():
        assert asyncio.get_running_loop().time() < deadline, "Envoy never got the dead endpoint"
        await asyncio.sleep(0.05)
    with contextlib.suppress(InferenceServerException):  # UNAVAILABLE, unless the live one was picked
        await _infer(gateway, headers)
    assert envoy_stat(gateway, stat + "retry_or_shadow_abandoned$") == 1
    assert envoy_stat(gateway, stat + "upstream_rq_retry$") == 0
    # Within the limit, the refused connection is retried on the live backend: every call is served.
    publish(retry_max_request_bytes=1 << 20)
    routes = f"^http\\.public_grpc\\.rds\\.{ROUTES_GRPC}\\.update_success$"
    pushed = envoy_stat(gateway, routes)
    await eventually(lambda: envoy_stat(gateway, routes) > pushed, what="the new routes to reach Envoy")
    for _ in range(30):  # until one was sent to the dead backend first (1 in 3 each)
        await _infer(gateway, headers)
        if envoy_stat(gateway, stat + "upstream_rq_retry$"):
            break
    assert envoy_stat(gateway, stat + "upstream_rq_retry$") == 1
    assert envoy_stat(gateway, stat + "retry_or_shadow_abandoned$") == 1


async def test_envoy_is_restarted_when_it_dies(edge: Edge) -> None:
    gateway, _, issuer = edge
    assert gateway.envoy is not None
    process = gateway.envoy.process
    assert process._proc is not None
    os.kill(process._proc.pid, signal.SIGKILL)
    await eventually(lambda: process.restarts == 1, timeout_s=20, what="the restart")
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    await _infer(gateway, {"authorization": f"Bearer {issuer.token()}"})  # same port as before
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1  # and on the fast path again


async def test_a_stream_through_envoy_is_one_stream_in_order(edge: Edge, tritons: list[TritonServer]) -> None:
    """ModelStreamInfer passes Envoy to the Python frontend as one stream: each request gets the same
    answers, in the same order, as on a stream straight to Triton (decoupled answers included)."""
    from tests.integration.test_grpc_e2e import _request, _stream

    gateway, recorder, issuer = edge
    # Decoupled answers only: Triton 2.51 aborts (proto_buffer_writer assertion) when a decoupled
    # model's answers and another model's race on one stream's writer, with or without a gateway.
    requests = [_request("repeat_fp32", "a", n=3, delay_ms=2), _request("repeat_fp32", "b", n=1, delay_ms=2)]
    requests.append(_request("repeat_fp32", "c", n=2, delay_ms=2))
    address = f"127.0.0.1:{gateway.grpc_port}"
    with pytest.raises(Exception, match="UNAUTHENTICATED"):
        await _stream(address, requests)  # no token: refused before anything is forwarded
    answers = await _stream(address, requests, issuer.token())
    direct = await _stream(tritons[0].grpc_address, requests, issuer.token())

    # Triton orders answers per request, not across models: compare each request's answers.
    def by_request(stream: list[Any]) -> dict[str, list[tuple[str, dict[str, bytes]]]]:
        out: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        for request_id, error, outputs in stream:
            out.setdefault(request_id, []).append((error, {k: v.tobytes() for k, v in outputs.items()}))
        return out

    assert len(answers) == 6
    assert by_request(answers) == by_request(direct)
    assert [int(o["INDEX"].ravel()[0]) for i, _, o in answers if i == "a"] == [0, 1, 2]
    await eventually(lambda: len(recorder.events) >= 3, what="usage of the streamed requests")
    assert [e.model for e in recorder.events] == ["repeat_fp32"] * 3


async def test_the_clients_http_deadline_bounds_the_fast_path(edge: Edge) -> None:
    """sonic_client sends sonic-timeout-ms: the backend call is cut there (504), not at 300 s."""
    gateway, _, issuer = edge
    raw = np.zeros((2048, 48, 48, 1), np.float32).tobytes()  # delay_fp32: ~0.1 s for this batch
    header = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [2048, 48, 48, 1], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()  # fmt: skip
    before = envoy_stat(gateway, _cluster_stat("delay_fp32", grpc=False))
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(
            f"http://127.0.0.1:{gateway.http_port}/v2/models/delay_fp32/infer",
            content=header + raw,
            headers={
                "authorization": f"Bearer {issuer.token()}",
                "inference-header-content-length": str(len(header)),
                "sonic-timeout-ms": "20",
            },
        )
    assert answer.status_code == 504, answer.text
    assert answer.json() == {"error": "upstream request timeout"}  # Triton's error shape
    assert envoy_stat(gateway, _cluster_stat("delay_fp32", grpc=False)) == before + 1  # on the fast path


async def test_rate_limits_are_enforced_by_envoy_with_the_shared_buckets(
    tritons: list[TritonServer], tmp_path: Path
) -> None:
    """A configured limit keeps the fast path: Envoy asks the control plane's rate-limit service,
    which charges the same buckets as the Python path (Redis-global when redis_url is set)."""
    issuer = TestIssuer("http://127.0.0.1/issuer")
    limits = {"default": {"inferences_per_s": 1, "burst_s": 3}}  # a bucket of 3 inferences
    with serving_jwks(issuer) as jwks_uri:
        gateway, _ = envoy_gateway(
            tritons, jwks_uri, issuer, limits=limits, database_url=f"sqlite:///{tmp_path}/c.db"
        )
        await gateway.start()
        try:
            await eventually(lambda: bool(gateway.envoy and gateway.envoy.view.models), what="first push")
            headers = {"authorization": f"Bearer {issuer.token()}"}
            before = envoy_stat(gateway, _cluster_stat(MODEL))
            await _infer(gateway, headers)  # 3 inferences: the whole bucket, on the fast path
            assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1
            error = await _refusal(gateway, headers)
            assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1  # refused before a backend
            assert envoy_stat(gateway, r"^cluster\.grpc-[0-9a-f]+\.ratelimit\.over_limit$") >= 1
            other = {"authorization": f"Bearer {issuer.token(sub='bob')}"}
            await _infer(gateway, other)  # another subject has its own bucket
        finally:
            await gateway.stop(grace_s=1)


async def test_mutated_tokens_never_reach_a_backend(edge: Edge) -> None:
    """Differential fuzz: every one-character change of a good token is refused through Envoy exactly
    as the Python validator refuses it (or accepted where it accepts it), and only accepted ones are
    served. Signatures are where Envoy's and Python's decoders could disagree (base64 tail bits)."""
    import random

    gateway, _, issuer = edge
    token = issuer.token()
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"
    positions = [len(token) - 1, len(token) - 2, *rng.sample(range(len(token)), 22)]
    mutants = {token[:i] + rng.choice(alphabet.replace(token[i], "")) + token[i + 1 :] for i in positions}
    mutants |= {token + "A", token[:-1], token.replace(".", "..", 1)}
    for mutant in sorted(mutants):
        authorization = f"Bearer {mutant}"
        try:
            principal = await gateway.authenticator.authenticate(authorization)
            gateway.authorizer.authorize_infer(principal, MODEL)
            accepted = True
        except GatewayError:
            accepted = False
        before = envoy_stat(gateway, _cluster_stat(MODEL))
        try:
            await _infer(gateway, {"authorization": authorization})
            served = True
        except InferenceServerException:
            served = False
        assert served == accepted, mutant
        assert envoy_stat(gateway, _cluster_stat(MODEL)) == before + int(accepted), mutant


def _names_a_region(payload: bytes) -> bool | None:
    """Whether Triton's parser would see a shared-memory parameter (None: not a ModelInferRequest)."""
    try:
        request = service_pb2.ModelInferRequest.FromString(payload)
    except Exception:  # any parse failure: Triton refuses the call
        return None
    tensors = [*request.inputs, *request.outputs]
    return any(key.startswith("shared_memory") for t in tensors for key in t.parameters)


async def test_mutated_messages_naming_a_region_never_reach_a_backend(edge: Edge) -> None:
    """Differential fuzz of the policy filter's protobuf reader against protobuf's own parser: byte
    changes to a message naming a shared-memory region. Every call is answered; one that Triton's
    parser would read as naming a region never takes the fast path."""
    import random

    gateway, _, issuer = edge
    request = service_pb2.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 48, 48, 1])
    tensor.parameters["shared_memory_region"].string_param = "someone-elses-region"
    tensor.parameters["shared_memory_byte_size"].int64_param = 9216
    original = request.SerializeToString()
    rng = random.Random(11)
    mutants = {original}
    while len(mutants) < 40:
        data = bytearray(original)
        for _ in range(rng.choice((1, 1, 2))):
            data[rng.randrange(len(data))] = rng.randrange(256)
        mutants.add(bytes(data))
    headers = (("authorization", f"Bearer {issuer.token()}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for mutant in sorted(mutants):
            before = envoy_stat(gateway, _cluster_stat(MODEL))
            with contextlib.suppress(grpc.aio.AioRpcError):
                await asyncio.wait_for(call(mutant, metadata=headers), 10)
            fast = envoy_stat(gateway, _cluster_stat(MODEL)) > before
            assert not (fast and _names_a_region(mutant)), mutant.hex()
    # The fuzz exercised the property: many mutants still name a region in protobuf's reading.
    assert sum(bool(_names_a_region(m)) for m in mutants) >= 10


async def test_compressed_grpc_requests_are_served_through_python(edge: Edge) -> None:
    """Envoy cannot read a gzip-compressed message (field extraction would refuse the call): it takes
    the Python path, which decodes it; the thin client's compression="auto" relies on this."""
    gateway, _, issuer = edge
    before = envoy_stat(gateway, _cluster_stat(MODEL))
    async with grpcclient.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        result = await client.infer(
            MODEL,
            _grpc_inputs(_patches()),
            headers={"authorization": f"Bearer {issuer.token()}"},
            compression_algorithm="gzip",
        )
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    np.testing.assert_array_equal(out.ravel(), _patches().reshape(3, -1).sum(axis=1))
    assert envoy_stat(gateway, _cluster_stat(MODEL)) == before  # not on the fast path


async def test_a_catalog_of_hundreds_of_models_reaches_envoy_and_the_real_one_still_serves(
    edge: Edge,
) -> None:
    """One ADS stream carries every model's clusters: file watches (one inotify instance per
    cluster, 128 per user) took Envoy down at about sixty models."""
    from gateway.routing.backend import Backend

    gateway, _, issuer = edge
    fake = Backend("far/192.0.2.7:8001", "far", "192.0.2.7:8001", "192.0.2.7:8000")  # TEST-NET: never used
    # Nothing answers at TEST-NET: a health probe would (rightly) take the fake's 150 models out of
    # the view again, racing the wait below. The real backends keep their last (healthy) verdict.
    await gateway.health.stop()
    static = list(gateway.registry.snapshot.backends.values())
    gateway.registry.set_backends([*static, fake])
    models = {f"model_{i:03d}": frozenset({"1"}) for i in range(150)}
    gateway.registry.update_health(fake.id, True, models)
    assert gateway.envoy is not None
    await eventually(lambda: gateway.envoy is not None and len(gateway.envoy.view.models) > 150, what="push")
    admin = gateway.envoy.process.admin_url
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"{admin}/clusters", timeout=5)).text
        names = {line.split("::", 1)[0] for line in text.splitlines() if line.startswith(("grpc-", "http-"))}
        if len(names) >= 300:  # 150 fake models x (gRPC + HTTP), plus the real ones
            break
        assert asyncio.get_running_loop().time() < deadline, f"Envoy has {len(names)} model clusters"
        await asyncio.sleep(0.1)
    assert gateway.envoy is not None
    assert gateway.envoy.process.restarts == 0  # it never died on the way
    # Every call is served; right after the push a call may still take the Python path (a busy
    # control plane answers Envoy's first verdict call for a new token late), so a few tries.
    headers = {"authorization": f"Bearer {issuer.token()}"}
    for _ in range(20):
        before = envoy_stat(gateway, _cluster_stat(MODEL))
        await _infer(gateway, headers)
        if envoy_stat(gateway, _cluster_stat(MODEL)) == before + 1:
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("the real model is no longer served by Envoy's fast path")


@pytest.mark.redis
async def test_rate_limits_are_global_across_two_gateways_through_redis(
    tritons: list[TritonServer], tmp_path: Path
) -> None:
    """Two replicas (two Envoys, two control planes) share one bucket in the real Redis: what one
    spends, the other refuses."""
    from tests.support.redis import delete_prefix, redis_url, unique_prefix

    url, prefix = redis_url(), unique_prefix()
    issuer = TestIssuer("http://127.0.0.1/issuer")
    limits = {"default": {"inferences_per_s": 1, "burst_s": 3}}  # a bucket of 3 inferences
    gateways: list[Gateway] = []
    with serving_jwks(issuer) as jwks_uri:
        try:
            for i in range(2):
                gateway, _ = envoy_gateway(
                    tritons, jwks_uri, issuer, limits=limits, redis_url=url,
                    state={"key_prefix": prefix}, database_url=f"sqlite:///{tmp_path}/c{i}.db",
                )  # fmt: skip
                await gateway.start()
                gateways.append(gateway)
                await eventually(lambda g=gateway: bool(g.envoy and g.envoy.view.models), what="push")
            first, second = gateways
            headers = {"authorization": f"Bearer {issuer.token()}"}
            await _infer(first, headers)  # the whole bucket, spent through the first replica
            before = envoy_stat(second, _cluster_stat(MODEL))
            error = await _refusal(second, headers)
            assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert envoy_stat(second, _cluster_stat(MODEL)) == before  # refused by its Envoy
        finally:
            for gateway in gateways:
                await gateway.stop(grace_s=1)
            await delete_prefix(url, prefix)
