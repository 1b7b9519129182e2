"""Token validation through the gRPC frontend, with the development issuer (the real validation path).

Fake backends keep the auth cases fast; one case goes all the way to a real Triton server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry
from tritonclient.utils import InferenceServerException

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.config import Settings, load_settings
from gateway.triton.launcher import TritonServer
from tests.conftest import gateway_settings
from tests.support.fake_triton import FakeTriton


def _auth(tmp_path: Path) -> dict[str, object]:
    return {
        "dev_issuer": {"enabled": True, "key_dir": str(tmp_path / "keys")},
        "admin_groups": ["/sonic/admins"],
    }


def _toy_inputs() -> list[tc.InferInput]:
    x = np.ones((2, 2), np.float32)
    inp = tc.InferInput("x", [2, 2], "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Settings]]:
    backend = FakeTriton("a")
    await backend.start()
    settings = load_settings(
        None,
        listen={"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        backends=[{"facility": "a", "grpc": backend.address}],
        auth=_auth(tmp_path),
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    yield gateway, settings
    await gateway.stop(grace_s=0)
    await backend.stop()


async def _infer(gateway: Gateway, headers: dict[str, str]) -> InferenceServerException | None:
    async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
        try:
            await client.infer("toy", _toy_inputs(), headers=headers)
        except InferenceServerException as exc:
            return exc
    return None


async def test_missing_token_is_unauthenticated_with_a_reason(secured: tuple[Gateway, Settings]) -> None:
    error = await _infer(secured[0], {})
    assert error is not None
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert "token" in error.message().lower()


async def test_garbage_token_is_rejected_and_never_echoed(secured: tuple[Gateway, Settings]) -> None:
    secret = "not.a-real.token-value-123"
    error = await _infer(secured[0], {"authorization": f"Bearer {secret}"})
    assert error is not None
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert secret not in error.message()


async def test_valid_token_is_served_and_token_without_scope_is_denied(
    secured: tuple[Gateway, Settings],
) -> None:
    gateway, settings = secured
    issuer = DevIssuer(settings.auth.dev_issuer)
    good = issuer.mint("alice", scopes=["compute.read"])
    assert await _infer(gateway, {"authorization": f"Bearer {good}"}) is None
    weak = issuer.mint("bob", scopes=["storage.read:/"])
    error = await _infer(gateway, {"authorization": f"Bearer {weak}"})
    assert error is not None
    assert error.status() == "StatusCode.PERMISSION_DENIED"
    assert "compute.read" in error.message()
    event = gateway.recorder.events[-1]  # type: ignore[attr-defined]
    assert event.subject == "alice"


async def test_health_probes_need_no_token(secured: tuple[Gateway, Settings]) -> None:
    async with tc.InferenceServerClient(f"127.0.0.1:{secured[0].grpc_port}") as client:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        with pytest.raises(InferenceServerException) as err:
            await client.get_model_metadata("toy")
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"


@pytest.mark.triton
async def test_token_through_to_real_triton(tritons: list[TritonServer], tmp_path: Path) -> None:
    settings = gateway_settings(tritons, auth=_auth(tmp_path))
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        token = DevIssuer(settings.auth.dev_issuer).mint("carol", scopes=["compute.read"])
        x = np.zeros((235, 48, 48, 1), np.float32)
        inp = tc.InferInput("main_input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        async with tc.InferenceServerClient(f"127.0.0.1:{gateway.grpc_port}") as client:
            result = await client.infer("emtrack_michel", [inp], headers={"authorization": f"Bearer {token}"})
        probs = result.as_numpy("em_trk_none_netout")
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    finally:
        await gateway.stop(grace_s=0)
