"""The KServe v2 REST frontend against respx-mocked backends: errors, limits, headers and auth."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.config import DevIssuerSettings, load_settings
from tests.support.net import free_port

TOY = {"toy": frozenset({"1"})}
HEADER = b'{"inputs":[{"name":"x","shape":[7,2],"datatype":"FP32","parameters":{"binary_data_size":56}}]}'
BODY = HEADER + bytes(56)
OK_HEADER = b'{"model_name":"toy","model_version":"1","outputs":[{"name":"y","shape":[7],"datatype":"FP32"}]}'


def _addresses(n: int) -> list[tuple[str, str]]:
    return [(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}") for _ in range(n)]


async def _gateway(backends: list[dict[str, Any]], **overrides: Any) -> Gateway:
    values: dict[str, Any] = {
        "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "backends": backends,
        "routing": {"health_interval_s": 60},  # probes only at start: the tests drive health themselves
        "auth": {"enabled": False},
    }
    for key, value in overrides.items():
        values[key] = {**values.get(key, {}), **value}
    gateway = Gateway(load_settings(None, **values), metrics_registry=CollectorRegistry())
    await gateway.start()
    for backend_id in gateway.registry.snapshot.backends:
        gateway.registry.update_health(backend_id, True, TOY)
    return gateway


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1", path__startswith="/v2/health").pass_through()
        yield router


@pytest.fixture
async def pair(mock: respx.MockRouter) -> AsyncIterator[tuple[Gateway, list[str], httpx.AsyncClient]]:
    addresses = _addresses(2)
    gw = await _gateway([{"facility": f"f{i}", "grpc": g, "http": h} for i, (g, h) in enumerate(addresses)])
    mock.route(host="127.0.0.1", port=gw.http_port).pass_through()
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=10)
    yield gw, [h for _, h in addresses], client
    await client.aclose()
    await gw.stop(grace_s=0)


def _route(mock: respx.MockRouter, http: str, path: str = "/v2/models/toy/infer") -> respx.Route:
    host, port = http.split(":")
    return mock.route(host=host, port=int(port), path=path)


def _ok() -> httpx.Response:
    return httpx.Response(
        200,
        content=OK_HEADER + bytes(28),
        headers={
            "content-type": "application/octet-stream",
            "inference-header-content-length": str(len(OK_HEADER)),
        },
    )


async def test_connect_error_is_retried_on_the_other_backend_and_bytes_pass_through(
    mock: respx.MockRouter, pair: Any
) -> None:
    gw, https, client = pair
    dead = _route(mock, https[0]).mock(side_effect=httpx.ConnectError("connection refused"))
    good = _route(mock, https[1]).mock(return_value=_ok())
    dead_id = next(b.id for b in gw.registry.snapshot.backends.values() if b.http_address == https[0])
    for _ in range(30):  # ties are broken at random: go on until the dead one was picked twice
        if dead.call_count >= 2:
            break
        gw.registry.update_health(dead_id, True, TOY)  # as if the last probe looked good
        r = await client.post(
            "/v2/models/toy/infer",
            content=BODY,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(HEADER)),
                "authorization": "Bearer secret-token",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "sonic-job-id": "job-1",
                "sonic-dataset": "mc-2026",
            },
        )
        assert r.status_code == 200, r.text
        assert r.content == OK_HEADER + bytes(28)
        assert r.headers["inference-header-content-length"] == str(len(OK_HEADER))
        assert r.headers["content-type"] == "application/octet-stream"
        assert len(r.headers["x-request-id"]) == 32  # generated
    assert dead.call_count == 2
    assert good.call_count >= 2  # every request was answered, the retried ones by the good backend
    sent = good.calls.last.request
    assert sent.content == BODY
    assert "authorization" not in sent.headers
    assert sent.headers["traceparent"].startswith("00-0af76519")
    assert sent.headers["x-request-id"] == r.headers["x-request-id"]
    event = gw.recorder.events[-1]
    assert (event.inferences, event.version_served, event.job_id, event.dataset) == (
        7,
        "1",
        "job-1",
        "mc-2026",
    )
    assert event.backend_id != dead_id


async def test_both_unreachable_is_503(mock: respx.MockRouter, pair: Any) -> None:
    _, https, client = pair
    for http in https:
        _route(mock, http).mock(side_effect=httpx.ConnectTimeout("timed out"))
    r = await client.post("/v2/models/toy/infer", content=BODY)
    assert r.status_code == 503
    assert "unreachable" in r.json()["error"]


async def test_backend_answering_503_is_passed_through_and_ejected(mock: respx.MockRouter, pair: Any) -> None:
    """A 503 reaches the client as the backend sent it, and counts against that backend's circuit."""
    gw, https, client = pair
    busy = _route(mock, https[0]).mock(return_value=httpx.Response(503, json={"error": "overloaded"}))
    good = _route(mock, https[1]).mock(return_value=_ok())
    busy_id = next(b.id for b in gw.registry.snapshot.backends.values() if b.http_address == https[0])
    threshold = gw.settings.routing.circuit_failure_threshold
    answers = []
    for _ in range(100):  # ties are broken at random: go on until the busy one tripped its circuit
        if gw.breaker.ejected(busy_id):
            break
        r = await client.post("/v2/models/toy/infer", content=BODY)
        answers.append(r.status_code)
    assert gw.breaker.ejected(busy_id)
    assert busy.call_count == threshold
    assert answers.count(503) == threshold
    assert good.call_count == answers.count(200)
    for _ in range(5):  # ejected: everything goes to the other backend now
        assert (await client.post("/v2/models/toy/infer", content=BODY)).status_code == 200
    assert busy.call_count == threshold


@pytest.mark.parametrize(
    ("error", "status", "words"),
    [
        (httpx.ReadTimeout("slow"), 504, "deadline"),
        (httpx.RemoteProtocolError("peer closed"), 503, "retry later"),
    ],
)
async def test_backend_transport_errors_are_mapped(
    mock: respx.MockRouter, pair: Any, error: Exception, status: int, words: str
) -> None:
    _, https, client = pair
    routes = [_route(mock, http).mock(side_effect=error) for http in https]
    r = await client.post("/v2/models/toy/infer", content=BODY)
    assert r.status_code == status
    assert words in r.json()["error"]
    assert sum(route.call_count for route in routes) == 1  # may have executed: not retried


async def test_backend_error_answer_is_passed_through(mock: respx.MockRouter, pair: Any) -> None:
    _, https, client = pair
    for http in https:
        _route(mock, http).mock(
            return_value=httpx.Response(400, json={"error": "unexpected shape for input 'x'"})
        )
    r = await client.post("/v2/models/toy/infer", content=b"{}")
    assert r.status_code == 400
    assert r.json() == {"error": "unexpected shape for input 'x'"}


async def test_compressed_bodies_pass_through_untouched(mock: respx.MockRouter, pair: Any) -> None:
    _, https, client = pair
    answer = gzip.compress(OK_HEADER)
    routes = [
        _route(mock, http).mock(
            return_value=httpx.Response(
                200, content=answer, headers={"content-encoding": "gzip", "content-type": "application/json"}
            )
        )
        for http in https
    ]
    r = await client.post(
        "/v2/models/toy/infer",
        content=gzip.compress(HEADER),
        headers={"content-encoding": "gzip", "accept-encoding": "gzip"},
    )
    assert r.status_code == 200
    assert json.loads(r.content)["model_version"] == "1"  # httpx decoded the gzip the backend sent
    sent = next(route.calls.last.request for route in routes if route.called)
    assert sent.headers["content-encoding"] == "gzip"
    assert gzip.decompress(sent.content) == HEADER


async def test_oversized_bodies_are_refused_with_413(mock: respx.MockRouter) -> None:
    ((grpc_a, http_a),) = _addresses(1)
    gw = await _gateway(
        [{"facility": "f", "grpc": grpc_a, "http": http_a}], routing={"max_http_body_bytes": 1000}
    )
    mock.route(host="127.0.0.1", port=gw.http_port).pass_through()
    backend = _route(mock, http_a).mock(return_value=_ok())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}") as client:
            r = await client.post("/v2/models/toy/infer", content=bytes(2000))
            assert r.status_code == 413
            assert "1000 bytes" in r.json()["error"]
            assert "smaller batches" in r.json()["error"]

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(5):
                    yield bytes(300)

            r = await client.post("/v2/models/toy/infer", content=chunks())  # chunked: no Content-Length
            assert r.status_code == 413
            r = await client.post("/v2/models/toy/infer", content=bytes(900))
            assert r.status_code == 200
        assert backend.call_count == 1
    finally:
        await gw.stop(grace_s=0)


async def test_unknown_model_and_no_http_backend(mock: respx.MockRouter) -> None:
    ((grpc_a, _),) = _addresses(1)
    gw = await _gateway([{"facility": "grpc-only", "grpc": grpc_a}])
    mock.route(host="127.0.0.1", port=gw.http_port).pass_through()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}") as client:
            r = await client.post("/v2/models/nope/infer", content=b"{}")
            assert r.status_code == 404
            assert "'nope'" in r.json()["error"]
            assert "toy" in r.json()["error"]
            r = await client.post("/v2/models/toy/infer", content=b"{}")
            assert r.status_code == 503
            assert "without an HTTP endpoint" in r.json()["error"]
            r = await client.get("/v2/models/toy/ready")
            assert r.status_code == 400
            r = await client.post("/v2/repository/models/toy/load")
            assert r.status_code == 501
            assert "operators" in r.json()["error"]
            r = await client.get("/v2/systemsharedmemory/status")
            assert r.status_code == 200
            assert r.json() == []
    finally:
        await gw.stop(grace_s=0)


async def test_auth_missing_token_401_good_token_200(mock: respx.MockRouter, tmp_path: Path) -> None:
    ((grpc_a, http_a),) = _addresses(1)
    dev = DevIssuerSettings(enabled=True, key_dir=str(tmp_path / "dev-issuer"))
    gw = await _gateway(
        [{"facility": "f", "grpc": grpc_a, "http": http_a}],
        auth={"enabled": True, "dev_issuer": dev.model_dump()},
    )
    mock.route(host="127.0.0.1", port=gw.http_port).pass_through()
    backend = _route(mock, http_a).mock(return_value=_ok())
    token = DevIssuer(dev).mint("alice")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}") as client:
            r = await client.post("/v2/models/toy/infer", content=BODY)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer error=")
            assert "bearer token" in r.json()["error"]
            r = await client.post(
                "/v2/models/toy/infer", content=BODY, headers={"authorization": "Bearer junk"}
            )
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
            assert "junk" not in r.text
            r = await client.post(
                "/v2/models/toy/infer", content=BODY, headers={"authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200, r.text
            assert token not in str(backend.calls.last.request.headers)
            assert gw.recorder.events[-1].subject == "alice"
    finally:
        await gw.stop(grace_s=0)


async def test_facility_credential_replaces_the_client_token(mock: respx.MockRouter, tmp_path: Path) -> None:
    ((grpc_a, http_a),) = _addresses(1)
    token_file = tmp_path / "facility.token"
    token_file.write_text("facility-token\n")
    gw = await _gateway(
        [
            {
                "facility": "f",
                "grpc": grpc_a,
                "http": http_a,
                "credentials": {"kind": "file", "token_file": str(token_file)},
            }
        ]
    )
    mock.route(host="127.0.0.1", port=gw.http_port).pass_through()
    backend = _route(mock, http_a).mock(return_value=_ok())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}") as client:
            r = await client.post(
                "/v2/models/toy/infer", content=BODY, headers={"authorization": "Bearer client-token"}
            )
        assert r.status_code == 200
        assert backend.calls.last.request.headers["authorization"] == "Bearer facility-token"
    finally:
        await gw.stop(grace_s=0)


def test_error_response_shapes() -> None:
    from gateway.errors import PermissionDenied, ResourceExhausted
    from gateway.frontends.http.kserve import error_response

    r = error_response(ResourceExhausted("slow down", retry_after_s=2.2))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert json.loads(bytes(r.body)) == {"error": "slow down"}
    r = error_response(PermissionDenied("needs group /dune"))
    assert r.status_code == 403
    assert r.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (
            b'{"inputs":[{"name":"x","shape":[7,2],"datatype":"FP32",'
            b'"parameters":{"shared_memory_region":"victim","shared_memory_byte_size":56}}]}',
            {},
        ),
        (
            b'{"inputs":[{"name":"x","shape":[7,2],"datatype":"FP32","parameters":{"binary_data_size":56}}],'
            b'"outputs":[{"name":"y","parameters":{"\\u0073hared_memory_region":"victim"}}]}',
            {"inference-header-content-length": "LENGTH"},
        ),
    ],
    ids=["json-input", "binary-extension-escaped-output"],
)
async def test_inference_naming_shared_memory_is_refused_and_never_forwarded(
    mock: respx.MockRouter, pair: Any, body: bytes, headers: dict[str, str]
) -> None:
    _, https, client = pair
    routes = [_route(mock, http).mock(return_value=_ok()) for http in https]
    headers = {k: str(len(body)) if v == "LENGTH" else v for k, v in headers.items()}
    for content in (body + bytes(56), gzip.compress(body + bytes(56))):
        encoding = {"content-encoding": "gzip"} if content[:2] == b"\x1f\x8b" else {}
        r = await client.post("/v2/models/toy/infer", content=content, headers={**headers, **encoding})
        assert r.status_code == 400, r.text
        assert "shared memory is not available through the gateway" in r.json()["error"]
    assert sum(route.call_count for route in routes) == 0
    r = await client.post(
        "/v2/models/toy/infer", content=BODY, headers={"inference-header-content-length": str(len(HEADER))}
    )
    assert r.status_code == 200


async def test_a_client_that_leaves_cancels_the_backend_call(
    pair: tuple[Gateway, list[str], httpx.AsyncClient], mock: respx.MockRouter
) -> None:
    """HTTP has no cancellation: the frontend notices the client is gone and frees the backend call,
    and the request is counted cancelled (499), never 200."""
    import asyncio

    gw, https, _ = pair
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_backend(request: httpx.Request) -> httpx.Response:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return _ok()

    for http in https:
        _route(mock, http).mock(side_effect=slow_backend)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}", timeout=10) as client:
        call = asyncio.create_task(client.post("/v2/models/toy/infer", content=BODY))
        await asyncio.wait_for(started.wait(), 10)
        call.cancel()  # the client gives up and closes its connection
        await asyncio.wait({call})
    await asyncio.wait_for(cancelled.wait(), 10)  # the backend call was cancelled, not left running
    registry = gw.metrics_registry
    labels = {"frontend": "http", "model": "toy", "outcome": "cancelled", "code": "499"}
    samples = [s for m in registry.collect() for s in m.samples if s.name == "sonic_gateway_requests_total"]
    assert [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())] == [1.0]
    assert not [s for s in samples if s.labels.get("outcome") == "ok"]
