"""The thin client (sonic_client) through the real gateway to real Triton: batching, tokens, tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as tc
from prometheus_client import CollectorRegistry
from sonic_client import AsyncClient, InferenceError
from sonic_client.protodune import extract_patches, find_hits, generate_event

from gateway.app import Gateway
from gateway.auth.dev_issuer import DevIssuer
from gateway.triton.launcher import TritonServer
from tests.conftest import gateway_settings

pytestmark = pytest.mark.triton


def _event_patches(n: int) -> np.ndarray:
    event = generate_event(11, event_id=0)
    return extract_patches(event.image, find_hits(event.image))[:n]


async def test_batched_inference_equals_direct_and_carries_provenance(
    tritons: list[TritonServer], tmp_path: Path
) -> None:
    settings = gateway_settings(
        tritons, auth={"dev_issuer": {"enabled": True, "key_dir": str(tmp_path / "keys")}}
    )
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        token = DevIssuer(settings.auth.dev_issuer).mint("dana", scopes=["compute.read"])
        patches = _event_patches(600)
        # Like with like, bit for bit: float32 GEMMs of different shapes round differently, so the
        # direct answer is for the same 235/235/130 batches, and both sides send one batch at a
        # time so Triton's dynamic batcher has nothing to merge a batch with.
        want = []
        async with tc.InferenceServerClient(tritons[0].grpc_address) as direct:
            for start in range(0, len(patches), 235):
                batch = patches[start : start + 235]
                inp = tc.InferInput("main_input", list(batch.shape), "FP32")
                inp.set_data_from_numpy(batch)
                want.append((await direct.infer("emtrack_michel", [inp])).as_numpy("em_trk_none_netout"))
        assert [len(w) for w in want] == [235, 235, 130]
        url = f"127.0.0.1:{gateway.grpc_port}"
        async with AsyncClient(url, token=token, job_id="job-e2e", dataset="synthetic:pdsp") as client:
            got = await client.infer("emtrack_michel", {"main_input": patches}, batch_size=235, concurrency=1)
        np.testing.assert_array_equal(got["em_trk_none_netout"], np.concatenate(want))
        assert got.stats.n_batches == 3
        events = [e for e in gateway.recorder.events if e.job_id == "job-e2e"]  # type: ignore[attr-defined]
        assert sum(e.inferences for e in events) == 600
        assert {e.dataset for e in events} == {"synthetic:pdsp"}
        assert {e.subject for e in events} == {"dana"}
        # a token the gateway rejects is an error retrying cannot fix: reported at once, not retried
        async with AsyncClient(url, token="not-a-token") as bad:
            with pytest.raises(InferenceError) as err:
                await bad.infer("emtrack_michel", {"main_input": patches[:1]})
        assert err.value.code == "UNAUTHENTICATED"
        assert err.value.attempts == 1
    finally:
        await gateway.stop(grace_s=0)


@pytest.mark.parametrize(("link_gbit_s", "sent"), [(0.1, "gzip"), (10.0, "none")])
async def test_auto_compression_through_the_gateway_follows_the_link(
    tritons: list[TritonServer], link_gbit_s: float, sent: str
) -> None:
    """Real detector patches (~20x compressible) through the real gateway to Triton: gzip on a slow
    share of the link, none on a fast one, and the same answer either way."""
    settings = gateway_settings(tritons, auth={"enabled": False})
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        patches = _event_patches(64)
        url = f"127.0.0.1:{gateway.grpc_port}"
        async with AsyncClient(url, token="unused", compression="auto", link_gbit_s=link_gbit_s) as client:
            got = await client.infer("emtrack_michel", {"main_input": patches})
        async with AsyncClient(url, token="unused") as plain:
            want = await plain.infer("emtrack_michel", {"main_input": patches})
        assert got.stats.compression == sent
        np.testing.assert_allclose(got["em_trk_none_netout"], want["em_trk_none_netout"], rtol=1e-6)
    finally:
        await gateway.stop(grace_s=0)
