from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
import respx

from sonic_client import Client, InferenceError, RetryPolicy
from sonic_client._http import decode_http_response, encode_http_request

BASE = "http://127.0.0.1:18000"
FAST = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.002)


def echo_server(fail: list[httpx.Response]) -> respx.MockRouter:
    """A KServe v2 server that returns every input back as output ``<name>_out``."""
    seen: list[httpx.Request] = []

    def infer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if fail:
            return fail.pop(0)
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        head_len = int(request.headers["inference-header-content-length"])
        head = json.loads(body[:head_len])
        offset = head_len
        outs, blobs = [], []
        for spec in head["inputs"]:
            size = spec["parameters"]["binary_data_size"]
            blobs.append(body[offset:offset + size])
            offset += size
            outs.append({"name": spec["name"] + "_out", "datatype": spec["datatype"],
                         "shape": spec["shape"], "parameters": {"binary_data_size": size}})
        rhead = json.dumps({"model_name": "m", "id": head["id"], "outputs": outs}).encode()
        return httpx.Response(200, content=rhead + b"".join(blobs),
                              headers={"Inference-Header-Content-Length": str(len(rhead))})

    router = respx.mock(base_url=BASE, assert_all_called=False)
    router.post("/v2/models/m/infer").mock(side_effect=infer)
    router.get("/v2").mock(return_value=httpx.Response(200, json={"name": "triton"}))
    router.get("/v2/models/m").mock(return_value=httpx.Response(
        200, json={"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]}))
    router.seen = seen  # type: ignore[attr-defined]
    return router


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_http_batches_roundtrip(compression: str | None) -> None:
    x = np.arange(4000, dtype=np.float32).reshape(1000, 4)
    router = echo_server([])
    with router, Client(BASE, token="tok", job_id="j1", dataset="d1",
                        compression=compression) as c:  # type: ignore[arg-type]
        out = c.infer("m", x, batch_size=235, concurrency=3)
        assert c.server_metadata()["name"] == "triton"
    np.testing.assert_array_equal(out["x_out"], x)
    assert out.stats.n_batches == 5
    reqs = router.seen  # type: ignore[attr-defined]
    infer_reqs = [r for r in reqs if r.url.path.endswith("/infer")]
    assert all(r.headers["authorization"] == "Bearer tok" for r in infer_reqs)
    assert all(r.headers["sonic-job-id"] == "j1" for r in infer_reqs)
    assert all(r.headers["sonic-dataset"] == "d1" for r in infer_reqs)
    assert len({r.headers["x-request-id"] for r in infer_reqs}) == 5
    assert all((r.headers.get("content-encoding") == "gzip") == (compression == "gzip")
               for r in infer_reqs)


def test_http_retry_after_and_503() -> None:
    x = np.ones((3, 4), dtype=np.float32)
    router = echo_server([httpx.Response(429, json={"error": "slow down"},
                                         headers={"Retry-After": "0.2"}),
                          httpx.Response(503, json={"error": "no healthy backend"})])
    t0 = time.perf_counter()
    with router, Client(BASE, token="tok", retry=FAST) as c:
        out = c.infer("m", {"x": x})
    assert time.perf_counter() - t0 >= 0.2
    assert out.stats.retries == 2
    np.testing.assert_array_equal(out["x_out"], x)


@pytest.mark.parametrize(("status", "code"), [(401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"),
                                              (404, "NOT_FOUND"), (400, "INVALID_ARGUMENT")])
def test_http_errors_not_retried(status: int, code: str) -> None:
    router = echo_server([httpx.Response(status, json={"error": "nope"})])
    with router, Client(BASE, token="tok", retry=FAST) as c, pytest.raises(InferenceError) as info:
        c.infer("m", {"x": np.ones((1, 4), dtype=np.float32)})
    assert info.value.code == code
    assert info.value.http_status == status
    assert "nope" in str(info.value)
    assert len(router.seen) == 1  # type: ignore[attr-defined]


def test_http_codec_roundtrip_bytes_and_ints() -> None:
    arrays = {"s": np.array([b"ab", b"", b"xyz"], dtype=np.object_),
              "i": np.arange(6, dtype=np.int64).reshape(2, 3)}
    body, head_len = encode_http_request(arrays, None, "rid")
    head = json.loads(body[:head_len])
    assert head["parameters"] == {"binary_data_output": True}
    for spec in head["inputs"]:
        spec["parameters"]["binary_data_size"] = spec["parameters"]["binary_data_size"]
    resp_head = json.dumps({"outputs": head["inputs"]}).encode()
    out = decode_http_response(resp_head + body[head_len:], len(resp_head))
    assert out["s"].tolist() == [b"ab", b"", b"xyz"]
    np.testing.assert_array_equal(out["i"], arrays["i"])
    json_only = json.dumps({"outputs": [{"name": "y", "datatype": "FP32", "shape": [2],
                                         "data": [1.5, 2.5]}]}).encode()
    np.testing.assert_array_equal(decode_http_response(json_only, None)["y"],
                                  np.array([1.5, 2.5], dtype=np.float32))


def test_http_tells_the_server_its_deadline() -> None:
    """HTTP has no standard deadline header: the client sends ``sonic-timeout-ms`` and Triton's
    own ``"timeout"`` inference parameter (microseconds)."""
    x = np.ones((3, 4), dtype=np.float32)
    router = echo_server([])
    with router, Client(BASE, token="tok", timeout=2.5) as c:
        c.infer("m", {"x": x})
        c.infer("m", {"x": x}, timeout=0.25, outputs=["x_out"])
        c.server_metadata()
        first, second, meta = [call.request for call in router.calls]
    assert first.headers["sonic-timeout-ms"] == "2500"
    head = json.loads(first.content[:int(first.headers["inference-header-content-length"])])
    assert head["parameters"] == {"timeout": 2_500_000, "binary_data_output": True}
    assert second.headers["sonic-timeout-ms"] == "250"
    head = json.loads(second.content[:int(second.headers["inference-header-content-length"])])
    assert head["parameters"] == {"timeout": 250_000}
    assert meta.headers["sonic-timeout-ms"] == "2500"
    router = echo_server([])
    with router, Client(BASE, token="tok", timeout=None) as c:
        c.infer("m", {"x": x})
    (plain,) = router.seen  # type: ignore[attr-defined]
    assert "sonic-timeout-ms" not in plain.headers
    head = json.loads(plain.content[:int(plain.headers["inference-header-content-length"])])
    assert head["parameters"] == {"binary_data_output": True}


def test_http_timeout_closes_the_connection() -> None:
    """When the client's timeout fires it drops the connection, so the server sees it leave
    (a real socket; about 0.3 s)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)
    port = listener.getsockname()[1]
    seen: dict[str, Any] = {}

    def never_answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            seen["request"] = request
            try:
                seen["eof"] = conn.recv(1) == b""  # blocks until the client closes
            except TimeoutError:
                seen["eof"] = False

    server = threading.Thread(target=never_answer)
    server.start()
    try:
        with Client(f"http://127.0.0.1:{port}", token="tok", timeout=0.3,
                    retry=RetryPolicy.none()) as c, pytest.raises(InferenceError) as info:
            c.server_metadata()
        server.join(6)
    finally:
        listener.close()
    assert info.value.code == "DEADLINE_EXCEEDED"
    assert seen["eof"] is True
    assert b"sonic-timeout-ms: 300\r\n" in seen["request"]


def test_http_connection_failures_are_retried_through_a_restart(fake_clock: Any) -> None:
    """Refused, reset and dropped connections are UNAVAILABLE and retried within the budget."""
    x = np.ones((3, 4), dtype=np.float32)
    router = echo_server([])
    echo = router.routes[0].side_effect
    failures: list[str] = []

    def restarting(request: httpx.Request) -> httpx.Response:
        if fake_clock.now < 40.0:
            failures.append("connect")
            raise httpx.ConnectError("connection refused", request=request)
        if "read" not in failures:
            failures.append("read")
            raise httpx.ReadError("connection reset by peer", request=request)
        if "protocol" not in failures:
            failures.append("protocol")
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return echo(request)  # type: ignore[no-any-return]

    router.routes[0].side_effect = restarting
    with router, Client(BASE, token="tok", clock=fake_clock, sleep=fake_clock.sleep) as c:
        out = c.infer("m", {"x": x})
    np.testing.assert_array_equal(out["x_out"], x)
    assert failures[-2:] == ["read", "protocol"]
    assert out.stats.retries == len(failures) == len(fake_clock.sleeps)
    assert 40.0 <= fake_clock.now <= 40.0 + 3 * 2.0


def test_http_retries_a_real_refused_connection_until_the_server_listens(fake_clock: Any) -> None:
    """The same restart against real sockets, not respx: while nothing listens on the port the
    connection is refused (UNAVAILABLE, retried); a server that starts listening 5 s later in
    fake time answers the next try."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"name": "triton"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens on `port` now: connections are refused
    servers: list[ThreadingHTTPServer] = []

    def sleep(seconds: float) -> None:
        fake_clock.sleep(seconds)
        if fake_clock.now >= 5.0 and not servers:  # the gateway is back
            servers.append(ThreadingHTTPServer(("127.0.0.1", port), Metadata))
            threading.Thread(target=servers[0].serve_forever, daemon=True).start()

    try:
        with Client(f"http://127.0.0.1:{port}", token="tok", timeout=5.0, clock=fake_clock,
                    sleep=sleep) as c:
            assert c.server_metadata() == {"name": "triton"}
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    assert servers, "the client gave up before the server came back"
    assert len(fake_clock.sleeps) > 5  # refused, retried, about once a second
    assert 5.0 <= fake_clock.now <= 5.0 + RetryPolicy().max_backoff
