"""A fake Triton: an in-process gRPC server implementing inference.GRPCInferenceService on a free
loopback port. ``main_input`` comes back as ``identity`` output plus the emtrack_michel outputs;
``fail_next`` makes the next N ModelInfer calls fail with a chosen status (and retry-after)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
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
            if st.fail_next > 0:
                st.fail_next -= 1
                if st.retry_after is not None:
                    context.set_trailing_metadata((("retry-after", st.retry_after),))
                context.abort(st.fail_code, "injected failure")
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


@pytest.fixture
def fake_triton() -> Iterator[FakeTriton]:
    state = FakeTriton()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(_Servicer(state), server)
    state.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield state
    finally:
        server.stop(grace=None).wait(5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not pick up the developer's real token or job ids."""
    for var in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_RUNTIME_DIR", "SONIC_JOB_ID",
                "SONIC_DATASET", "CONDOR_JOBID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID",
                "SONIC_GATEWAY_URL"):
        monkeypatch.delenv(var, raising=False)
