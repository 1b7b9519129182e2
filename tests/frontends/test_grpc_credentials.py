"""Facilities that require the gateway's own credential get it; the client's token stays home."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.config import load_settings
from tests.support.fake_triton import FakeTriton


async def _one(model: str, inp: tc.InferInput) -> AsyncIterator[dict[str, Any]]:
    yield {"model_name": model, "inputs": [inp]}


async def test_each_facility_gets_only_its_configured_credential(tmp_path: Path) -> None:
    token_file = tmp_path / "facility.token"
    token_file.write_text("facility-secret\n")
    plain, with_file, forwarding = FakeTriton("plain"), FakeTriton("file"), FakeTriton("fwd")
    for backend in (plain, with_file, forwarding):
        await backend.start()
        backend.script.models = {backend.name: ["1"]}
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        auth={"enabled": False},
        backends=[
            {"facility": "plain", "grpc": plain.address},
            {"facility": "file", "grpc": with_file.address,
             "credentials": {"kind": "file", "token_file": str(token_file)}},
            {"facility": "fwd", "grpc": forwarding.address, "credentials": {"kind": "forward_client_token"}},
        ],
    )  # fmt: skip
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        client_token = {"authorization": "Bearer client-token"}
        x = np.ones((1, 1), np.float32)
        inp = tc.InferInput("x", [1, 1], "FP32")
        inp.set_data_from_numpy(x)
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            for model in ("plain", "file", "fwd"):
                await client.infer(model, [inp], headers={"authorization": "Bearer client-token"})
        assert "authorization" not in plain.script.seen_metadata[-1]
        assert with_file.script.seen_metadata[-1]["authorization"] == "Bearer facility-secret"
        assert forwarding.script.seen_metadata[-1]["authorization"] == "Bearer client-token"
        # a stream (ModelStreamInfer) carries it too, and only to the facility that wants it
        for backend in (plain, with_file):
            async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
                answers = [
                    a async for a in client.stream_infer(_one(backend.name, inp), headers=client_token)
                ]
            assert [error for _, error in answers] == [None]
        assert "authorization" not in plain.script.seen_metadata[-1]
        assert with_file.script.seen_metadata[-1]["authorization"] == "Bearer facility-secret"
        # the token file is re-read when the facility's agent rotates it
        token_file.write_text("rotated-secret-with-more-bytes\n")
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            await client.infer("file", [inp])
        assert with_file.script.seen_metadata[-1]["authorization"] == "Bearer rotated-secret-with-more-bytes"
    finally:
        await gateway.stop(grace_s=0)
        for backend in (plain, with_file, forwarding):
            await backend.stop()
