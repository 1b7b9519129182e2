"""One gateway, fully started: register a backend over HTTP, infer over gRPC, find the provenance."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import tritonclient.grpc.aio as tc
from sonic_client._provenance import Provenance
from sqlalchemy import Engine

from gateway.catalog.recorder import BatchedUsageRecorder
from tests.catalog.support import ADMIN, READER, make_gateway
from tests.support.fake_triton import FakeTriton

SECOND = "protodune-sp:Läufe_µ-Zerfall"


async def test_register_infer_and_look_up_provenance(migrated_engine: Engine, db_url: str) -> None:
    fake = FakeTriton("lab")
    await fake.start()
    recorder = BatchedUsageRecorder(interval_s=0.05)
    gw = make_gateway(db_url, recorder=recorder)
    await gw.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.http_port}") as http:
            r = await http.post("/api/v1/facilities", json={"name": "lab"}, headers=ADMIN)
            assert r.status_code == 201
            body = {"facility": "lab", "address": fake.address}
            assert (await http.post("/api/v1/backends", json=body, headers=ADMIN)).status_code == 201
            for _ in range(250):
                if gw.registry.snapshot.candidates("toy"):
                    break
                await asyncio.sleep(0.02)
            client = tc.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
            try:
                x = np.zeros((4, 2), np.float32)
                inp = tc.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                headers = {
                    **READER,
                    "sonic-job-id": "reco-42",
                    "sonic-dataset": "protodune-sp:np04_reco_run5387",
                }
                for _ in range(3):
                    await client.infer("toy", [inp], headers=headers)
                # A second dataset of the same job, named beyond ASCII: the client percent-encodes it
                # (gRPC metadata is ASCII); the catalog stores it as written.
                tags = Provenance(job_id="reco-42", dataset=SECOND).headers()
                await client.infer("toy", [inp], headers={**READER, **tags})
            finally:
                await client.close()
            usage: list[dict[str, object]] = []
            for _ in range(250):
                usage = (
                    await http.get(
                        "/api/v1/usage?job_id=reco-42&dataset=protodune-sp:np04_reco_run5387", headers=READER
                    )
                ).json()["items"]
                # The recorder flushes every 50 ms, so the first flush may hold only part of
                # the three requests: wait for the row to be complete, not merely present.
                if usage and usage[0]["n_requests"] == 3:
                    break
                await asyncio.sleep(0.02)
            [row] = usage
            assert row["dataset"] == "protodune-sp:np04_reco_run5387"
            for _ in range(250):
                second = await http.get("/api/v1/usage", params={"dataset": SECOND}, headers=READER)
                if second.json()["items"]:
                    break
                await asyncio.sleep(0.02)
            assert [(u["job_id"], u["n_requests"]) for u in second.json()["items"]] == [("reco-42", 1)]
            assert (row["model"], row["version"], row["facility"]) == ("toy", "1", "lab")
            assert (row["n_requests"], row["n_inferences"], row["subject"]) == (3, 12, "alice")
    finally:
        await gw.stop(grace_s=0.5)
        await fake.stop()
    assert recorder.pending == 0
