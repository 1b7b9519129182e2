"""A fake Triton: an in-process gRPC server implementing inference.GRPCInferenceService on a free
loopback port. ``main_input`` comes back as ``identity`` output plus the emtrack_michel outputs;
``fail_next`` makes the next N ModelInfer calls fail with a chosen status (and retry-after);
``unavailable_until`` with ``clock`` answers UNAVAILABLE while the test's fake clock is before it
(a gateway restart in fake time); ``on_infer`` sees each call's metadata first (and may abort it
by returning a status)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc


@dataclass
class FakeTriton:
    port: int = 0
    fail_next: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    retry_after: str | None = None
    calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    unavailable_until: float = float("-inf")
    clock: Callable[[], float] | None = None
    call_times: list[float] = field(default_factory=list)
    on_infer: Callable[[dict[str, str]], grpc.StatusCode | None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


class _Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: FakeTriton) -> None:
        self.state = state

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name="fake-triton", version="2.51.0",
                                                  extensions=["binary_tensor_data"])

    def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=True)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        if request.name not in ("emtrack_michel", "identity_fp32"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model '{request.name}'")
        T = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=["1"], platform="fake",
            inputs=[T(name="main_input", datatype="FP32", shape=[-1, 48, 48, 1])],
            outputs=[T(name="em_trk_none_netout", datatype="FP32", shape=[-1, 3])])

    def ModelInfer(self, request: Any, context: Any) -> Any:
        st = self.state
        md = {k: v for k, v in context.invocation_metadata()}
        with st.lock:
            st.calls += 1
            st.metadata.append(md)
            st.request_ids.append(request.id)
            if st.clock is not None:
                st.call_times.append(st.clock())
                if st.call_times[-1] < st.unavailable_until:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "gateway restarting")
            if st.fail_next > 0:
                st.fail_next -= 1
                if st.retry_after is not None:
                    context.set_trailing_metadata((("retry-after", st.retry_after),))
                context.abort(st.fail_code, "injected failure")
        if st.on_infer is not None:
            status = st.on_infer(md)
            if status is not None:
                context.abort(status, "rejected by on_infer")
        if md.get("authorization", "") != "Bearer good-token":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or bad token")
        inp = request.inputs[0]
        shape = list(inp.shape)
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(shape)
        with st.lock:
            st.batch_sizes.append(shape[0])
        flat = x.reshape(shape[0], -1)
        s = flat.sum(axis=1)
        logits = np.stack([s, -s, flat.max(axis=1)], axis=1) / 100.0  # per item, batch-independent
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        cls = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        michel = (1 / (1 + np.exp(-flat.mean(axis=1, keepdims=True)))).astype(np.float32)
        outs = [("identity", x), ("em_trk_none_netout", cls), ("michel_netout", michel)]
        wanted = {o.name for o in request.outputs}
        if wanted:
            outs = [o for o in outs if o[0] in wanted]
        resp = service_pb2.ModelInferResponse(model_name=request.model_name, id=request.id)
        for name, arr in outs:
            resp.outputs.add(name=name, datatype="FP32", shape=list(arr.shape))
            resp.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
        return resp


def start_fake_server(state: FakeTriton) -> grpc.Server:
    """Serve ``state`` on ``state.port`` (0: a free port, written back into ``state.port``)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(state), server)
    state.port = server.add_insecure_port(f"127.0.0.1:{state.port}")
    server.start()
    return server


@pytest.fixture
def fake_triton() -> Iterator[FakeTriton]:
    state = FakeTriton()
    server = start_fake_server(state)
    try:
        yield state
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture
def fake_triton_state() -> FakeTriton:
    """A fake server's state with no server yet (start it with ``serve_fake``)."""
    return FakeTriton()


@pytest.fixture
def serve_fake() -> Iterator[Callable[[FakeTriton], grpc.Server]]:
    """``serve_fake(state)`` starts (or restarts, on ``state.port``) a fake server; all stop at
    teardown."""
    servers: list[grpc.Server] = []

    def start(state: FakeTriton) -> grpc.Server:
        servers.append(start_fake_server(state))
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            server.stop(grace=None).wait(5)


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps; ``sleeps`` records each."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up the developer's real token or job ids."""
    for var in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_RUNTIME_DIR", "SONIC_JOB_ID",
                "SONIC_DATASET", "CONDOR_JOBID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID",
                "SONIC_GATEWAY_URL"):
        monkeypatch.delenv(var, raising=False)
