"""Metric values after known traffic through the gateway to the real Triton servers."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as tg
import tritonclient.http.aio as th
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from tests.observability.support import label_values, value

pytestmark = pytest.mark.triton

MODEL = "identity_fp32"


def _patches(n: int) -> np.ndarray:
    return np.ones((n, 48, 48, 1), np.float32)


async def _metrics(gateway: Gateway) -> str:
    assert gateway.metrics_endpoint is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.metrics_endpoint.port}") as client:
        r = await client.get("/metrics")
        # Never on the public data port: anyone reaching it must not read them.
        assert (await client.get(f"http://127.0.0.1:{gateway.http_port}/metrics")).status_code == 404
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


async def test_known_traffic_gives_known_counts_on_both_frontends(gateway: Gateway) -> None:
    grpc_n, grpc_batch, http_n, http_batch = 3, 4, 2, 5
    async with tg.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        for _ in range(grpc_n):
            inp = tg.InferInput("INPUT0", [grpc_batch, 48, 48, 1], "FP32")
            inp.set_data_from_numpy(_patches(grpc_batch))
            await client.infer(MODEL, [inp])
        with pytest.raises(InferenceServerException):
            await client.infer("no_such_model_from_a_client", [inp])
    http = th.InferenceServerClient(f"127.0.0.1:{gateway.http_port}")
    try:
        for _ in range(http_n):
            inp = th.InferInput("INPUT0", [http_batch, 48, 48, 1], "FP32")
            inp.set_data_from_numpy(_patches(http_batch), binary_data=True)
            await http.infer(MODEL, [inp])
        with pytest.raises(InferenceServerException):
            await http.infer(MODEL, [inp], model_version="77")  # a version nobody serves
    finally:
        await http.close()

    text = await _metrics(gateway)
    for frontend, n, batch in (("grpc", grpc_n, grpc_batch), ("http", http_n, http_batch)):
        ok = {"frontend": frontend, "model": MODEL}
        assert value(text, "sonic_gateway_requests_total", **ok, outcome="ok", code="200") == n
        assert value(text, "sonic_gateway_requests_total", **ok, version="1", outcome="ok") == n
        assert value(text, "sonic_gateway_inferences_total", **ok) == n * batch
        assert value(text, "sonic_gateway_request_bytes_total", **ok) > n * batch * 48 * 48 * 4
        assert value(text, "sonic_gateway_response_bytes_total", **ok) > n * batch * 4
        assert value(text, "sonic_gateway_overhead_seconds_count", **ok) == n + (frontend == "http")
        assert value(text, "sonic_gateway_backend_duration_seconds_count", **ok) == n
        assert value(text, "sonic_gateway_backend_duration_seconds_sum", **ok) > 0
        assert value(text, "sonic_gateway_routing_decisions_total", **ok, attempt="first") == n
        assert value(text, "sonic_gateway_in_flight_requests", frontend=frontend) == 0
    # Errors are labelled; a client's model name or version never becomes a label value.
    assert (
        value(text, "sonic_gateway_requests_total", frontend="grpc", model="__unknown__", outcome="not_found",
              code="404", backend="")
        == 1
    )  # fmt: skip
    assert (
        value(text, "sonic_gateway_requests_total", frontend="http", model=MODEL, version="__unknown__",
              outcome="not_found", code="404")
        == 1
    )  # fmt: skip
    assert "no_such_model_from_a_client" not in text
    assert label_values(text, "version", "sonic_gateway_requests") <= {"", "1", "__unknown__"}
    # Every request went to one of the two real backends, both healthy and routable.
    backends = set(gateway.registry.snapshot.backends)
    assert label_values(text, "backend") <= backends | {""}
    for backend_id in backends:
        assert value(text, "sonic_gateway_backend_healthy", backend=backend_id) == 1
        assert value(text, "sonic_gateway_backend_ejected", backend=backend_id) == 0
        assert value(text, "sonic_gateway_backend_models", backend=backend_id) >= 3
    assert value(text, "sonic_gateway_build_info") == 1
