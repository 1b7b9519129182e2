"""Access logs, request ids, traceparent and token outcomes, through both frontends (fake backends).

The backend is scripted (a fake gRPC Triton; respx for HTTP) so the test can see what reached it;
tokens come from the development issuer through the real validation path.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import respx
import tritonclient.grpc.aio as tg
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.config import load_settings
from gateway.observability.logs import JsonFormatter
from tests.observability.support import value
from tests.support.fake_triton import FakeTriton
from tests.support.net import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SUBJECT = "alice-observed"
ANSWER = (
    b'{"model_name":"toy","model_version":"1",'
    b'"outputs":[{"name":"y","shape":[2],"datatype":"FP32","data":[1,2]}]}'
)
REQUEST = b'{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}'


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log record of the gateway (DEBUG and up) as JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Gateway, FakeTriton, str, str]]:
    fake = FakeTriton("a")
    await fake.start()
    http_backend = f"127.0.0.1:{free_port()}"
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        database_url=f"sqlite:///{tmp_path / 'catalog.db'}",
        backends=[{"facility": "a", "grpc": fake.address, "http": http_backend}],
        routing={"health_interval_s": 60},
        auth={"dev_issuer": {"enabled": True, "key_dir": str(tmp_path / "keys")}},
    )
    token = DevIssuer(settings.auth.dev_issuer).mint(SUBJECT, scopes=["compute.read"])
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    yield gateway, fake, http_backend, token
    await gateway.stop(grace_s=0)
    await fake.stop()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _access(stream: io.StringIO, request_id: str) -> dict[str, Any]:
    lines = [e for e in _lines(stream) if e["logger"] == "gateway.access" and e["request_id"] == request_id]
    assert len(lines) == 1, lines
    return lines[0]


async def test_grpc_access_log_metrics_and_trace_context(
    secured: tuple[Gateway, FakeTriton, str, str], captured: io.StringIO
) -> None:
    gateway, fake, _, token = secured
    dev = gateway.settings.auth.dev_issuer
    unscoped = DevIssuer(dev).mint("visitor", scopes=[])
    inp = tg.InferInput("x", [2, 2], "FP32")
    inp.set_data_from_numpy(np.ones((2, 2), np.float32))
    async with tg.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        headers = {
            "authorization": f"Bearer {token}",
            "x-request-id": "req-grpc-1",
            "traceparent": TRACEPARENT,
        }
        await client.infer("toy", [inp], headers=headers)
        with pytest.raises(InferenceServerException) as err:
            await client.infer(
                "toy", [inp], headers={"authorization": "Bearer not-a-jwt", "x-request-id": "r2"}
            )
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"
        headers = {"authorization": f"Bearer {unscoped}", "x-request-id": "r3"}
        with pytest.raises(InferenceServerException) as err:
            await client.infer("toy", [inp], headers=headers)
        assert err.value.status() == "StatusCode.PERMISSION_DENIED"

    seen = fake.script.seen_metadata[-1]
    assert seen["traceparent"] == TRACEPARENT  # W3C trace context reaches the backend
    assert seen["x-request-id"] == "req-grpc-1"
    assert "authorization" not in seen

    ok = _access(captured, "req-grpc-1")
    assert ok["level"] == "INFO"
    assert ok["frontend"] == "grpc"
    assert ok["model"] == "toy"
    assert ok["version"] == "1"
    assert ok["facility"] == "a"
    assert ok["backend"] == f"a/{fake.address}"
    assert ok["status"] == 200
    assert ok["outcome"] == "ok"
    assert ok["inferences"] == 2
    assert ok["subject"] == SUBJECT
    assert ok["trace_id"] == TRACE_ID
    assert ok["duration_ms"] >= ok["backend_ms"] > 0
    bad = _access(captured, "r2")
    assert (bad["status"], bad["outcome"], bad.get("backend")) == (401, "unauthenticated", None)
    denied = _access(captured, "r3")
    assert (denied["status"], denied["outcome"], denied["subject"]) == (403, "permission_denied", "visitor")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
        assert gateway.metrics_endpoint is not None
        text = (await http.get(f"http://127.0.0.1:{gateway.metrics_endpoint.port}/metrics")).text
    assert value(text, "sonic_gateway_requests_total", frontend="grpc", outcome="ok", model="toy") == 1
    assert (
        value(text, "sonic_gateway_requests_total", frontend="grpc", outcome="unauthenticated", code="401")
        == 1
    )
    assert value(text, "sonic_gateway_token_validations_total", outcome="rejected", reason="malformed") == 1
    assert value(text, "sonic_gateway_token_validations_total", outcome="accepted") == 2
    denials = value(
        text, "sonic_gateway_authorization_denials_total", issuer=dev.issuer, reason="missing_scope"
    )
    assert denials == 1
    for secret in (token, "not-a-jwt", SUBJECT):
        assert secret not in text
    logs = captured.getvalue()
    assert token not in logs
    assert "not-a-jwt" not in logs


async def test_http_access_log_and_trace_context(
    secured: tuple[Gateway, FakeTriton, str, str], captured: io.StringIO
) -> None:
    gateway, _, http_backend, token = secured
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="127.0.0.1", port=gateway.http_port).pass_through()
        assert gateway.metrics_endpoint is not None
        mock.route(host="127.0.0.1", port=gateway.metrics_endpoint.port).pass_through()
        backend = mock.post(f"http://{http_backend}/v2/models/toy/infer").respond(
            200, content=ANSWER, headers={"content-type": "application/json"}
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as http:
            r = await http.post(
                "/v2/models/toy/infer",
                content=REQUEST,
                headers={"authorization": f"Bearer {token}", "traceparent": TRACEPARENT},
            )
            denied = await http.post(
                "/v2/models/no_such_model/infer",
                content=REQUEST,
                headers={"authorization": f"Bearer {token}"},
            )
            assert gateway.metrics_endpoint is not None
            text = (await http.get(f"http://127.0.0.1:{gateway.metrics_endpoint.port}/metrics")).text
    assert r.status_code == 200
    assert denied.status_code == 404
    sent = backend.calls.last.request
    assert sent.headers["traceparent"] == TRACEPARENT
    assert sent.headers["x-request-id"] == r.headers["x-request-id"]

    line = _access(captured, r.headers["x-request-id"])
    assert (line["frontend"], line["model"], line["status"], line["inferences"]) == ("http", "toy", 200, 2)
    assert line["request_bytes"] == len(REQUEST)
    assert line["response_bytes"] == len(ANSWER)
    assert line["subject"] == SUBJECT
    assert line["trace_id"] == TRACE_ID
    missing = _access(captured, denied.headers["x-request-id"])
    assert (missing["status"], missing["outcome"], missing["model"]) == (404, "not_found", "no_such_model")
    assert (
        value(text, "sonic_gateway_inferences_total", frontend="http", model="toy", backend=line["backend"])
        == 2
    )
    assert value(text, "sonic_gateway_requests_total", frontend="http", model="__unknown__", code="404") == 1
    assert "no_such_model" not in text
    assert token not in captured.getvalue()
