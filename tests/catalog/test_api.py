from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import Engine

from gateway.app import Gateway
from gateway.catalog.recorder import write_usage
from gateway.core.recording import UsageEvent
from tests.catalog.support import ADMIN, READER

SHA = "ab" * 32


async def post(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> dict[str, object]:
    r = await client.post(f"/api/v1/{path}", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    out: dict[str, object] = r.json()
    return out


async def test_auth_is_required_everywhere(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/facilities")
    assert r.status_code == 401
    assert "bearer token" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert (await client.get("/api/v1/usage", headers={"authorization": "Bearer nope"})).status_code == 401
    assert (await client.get("/api/v1/facilities", headers=READER)).status_code == 200
    r = await client.post("/api/v1/facilities", json={"name": "lab"}, headers=READER)
    assert r.status_code == 403
    assert "gateway.admin" in r.json()["error"]
    assert (await client.delete("/api/v1/facilities/1", headers=READER)).status_code == 403


async def test_facility_crud(client: httpx.AsyncClient) -> None:
    created = await post(client, "facilities", {"name": "lab-a", "site": "FNAL", "contact": "ops@lab"})
    ident = created["id"]
    assert created["enabled"] is True
    r = await client.get(f"/api/v1/facilities/{ident}", headers=READER)
    assert r.json()["site"] == "FNAL"
    r = await client.patch(f"/api/v1/facilities/{ident}", json={"description": "GPUs"}, headers=ADMIN)
    assert r.status_code == 200
    assert r.json()["description"] == "GPUs"
    assert r.json()["site"] == "FNAL"
    r = await client.post("/api/v1/facilities", json={"name": "lab-a"}, headers=ADMIN)
    assert r.status_code == 409
    assert "lab-a" in r.json()["error"]
    assert (await client.delete(f"/api/v1/facilities/{ident}", headers=ADMIN)).status_code == 204
    r = await client.get(f"/api/v1/facilities/{ident}", headers=READER)
    assert r.status_code == 404
    assert r.json() == {"error": f"no facility with id {ident}"}
    assert (await client.patch("/api/v1/facilities/999", json={}, headers=ADMIN)).status_code == 404
    assert (await client.delete("/api/v1/facilities/999", headers=ADMIN)).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("facilities", {"name": "has space"}, "name"),
        ("facilities", {"name": "x", "bogus": 1}, "bogus"),
        ("facilities", {}, "name"),
        ("backends", {"facility": "lab", "address": "no-port"}, "address"),
        ("backends", {"facility": "lab", "address": "h:1", "capacity": 0}, "capacity"),
        ("backends", {"facility": "lab", "address": "h:1", "protocol": "udp"}, "protocol"),
        ("backends", {"facility": "lab", "address": "http://h:8001"}, "address"),
        ("backends", {"facility": "lab", "address": "a b c:1"}, "address"),
        ("backends", {"facility": "lab", "address": "h:0"}, "address"),
        (
            "backends",
            {"facility": "lab", "address": "h:1", "metrics_address": "h:1/metrics"},
            "metrics_address",
        ),
        ("backends", {"facility": "lab", "address": "h:1", "capacity": True}, "capacity"),
        ("datasets", {"name": "d", "n_files": True}, "n_files"),
        (
            "models",
            {
                "name": "m",
                "versions": [
                    {"version": "1", "inputs": [{"name": "x", "datatype": "FLOAT99", "shape": [1]}]}
                ],
            },
            "datatype",
        ),
        ("models", {"name": "m", "versions": [{"version": "1", "max_batch_size": 1.5}]}, "max_batch_size"),
        ("datasets", {"name": "d", "n_events": -1}, "n_events"),
        ("models", {"name": "m", "versions": [{"version": "1", "sha256": "xyz"}]}, "sha256"),
        ("deployments", {"backend_id": "one", "model": "m", "version": "1"}, "backend_id"),
    ],
)
async def test_bad_input_is_422_with_the_field(
    client: httpx.AsyncClient, path: str, body: dict[str, object], field: str
) -> None:
    r = await client.post(f"/api/v1/{path}", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert field in str([e["loc"] for e in r.json()["detail"]])


async def test_bad_query_and_body_never_500(client: httpx.AsyncClient) -> None:
    for url in (
        "/api/v1/facilities?limit=0",
        "/api/v1/facilities?limit=100000",
        "/api/v1/facilities?offset=-1",
        "/api/v1/facilities?sort=nope",
        "/api/v1/facilities?sort=DROP%20TABLE",
        "/api/v1/facilities/abc",
    ):
        assert (await client.get(url, headers=READER)).status_code == 422, url
    r = await client.post(
        "/api/v1/facilities", content=b"{not json", headers={**ADMIN, "content-type": "application/json"}
    )
    assert r.status_code == 422
    r = await client.post("/api/v1/backends", json={"facility": "ghost", "address": "h:1"}, headers=ADMIN)
    assert r.status_code == 422
    assert "ghost" in r.json()["error"]


async def test_pagination_sorting_and_filters(client: httpx.AsyncClient) -> None:
    for i, experiment in enumerate(["dune", "dune", "icarus", "dune", "sbnd"]):
        await post(
            client,
            "datasets",
            {
                "name": f"{experiment}:run_{i}",
                "experiment": experiment,
                "data_tier": "reco" if i % 2 else "raw",
                "n_events": 100 - i,
                "storage_uris": [f"root://eos/{i}"],
                "metadata": {"run": i},
            },
        )
    r = await client.get("/api/v1/datasets?experiment=dune&limit=2", headers=READER)
    page = r.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [d["name"] for d in page["items"]] == ["dune:run_0", "dune:run_1"]
    r = await client.get("/api/v1/datasets?experiment=dune&limit=2&offset=2", headers=READER)
    assert [d["name"] for d in r.json()["items"]] == ["dune:run_3"]
    r = await client.get("/api/v1/datasets?tier=reco&sort=-n_events", headers=READER)
    assert [d["metadata"]["run"] for d in r.json()["items"]] == [1, 3]
    r = await client.get("/api/v1/datasets?name=DUNE:*", headers=READER)
    assert r.json()["total"] == 3
    r = await client.get("/api/v1/datasets?name=dune:run%25", headers=READER)  # '%' is literal, not LIKE's
    assert r.json()["total"] == 0
    r = await client.get("/api/v1/datasets?name=*n_1", headers=READER)
    assert [d["name"] for d in r.json()["items"]] == ["dune:run_1"]
    ident = r.json()["items"][0]["id"]
    r = await client.patch(f"/api/v1/datasets/{ident}", json={"metadata": {"run": 7}}, headers=ADMIN)
    assert r.json()["metadata"] == {"run": 7}
    assert r.json()["storage_uris"] == ["root://eos/1"]
    assert (await client.delete(f"/api/v1/datasets/{ident}", headers=ADMIN)).status_code == 204
    assert (await client.get("/api/v1/datasets", headers=READER)).json()["total"] == 4


async def test_models_versions_deployments(client: httpx.AsyncClient) -> None:
    dataset = await post(client, "datasets", {"name": "protodune-sp:np04_reco_run5387", "experiment": "dune"})
    tensor = {"name": "main_input", "datatype": "FP32", "shape": [-1, 48, 48, 1]}
    model = await post(
        client,
        "models",
        {
            "name": "emtrack_michel",
            "versions": [
                {
                    "version": "1",
                    "platform": "python",
                    "inputs": [tensor],
                    "max_batch_size": 1693,
                    "sha256": SHA,
                    "training_dataset": dataset["name"],
                    "tags": ["production"],
                }
            ],
        },
    )
    assert model["versions"] == ["1"]
    await post(client, "models", {"name": "identity_fp32"})
    r = await client.post(
        f"/api/v1/models/{model['id']}/versions", json={"version": "2", "tags": ["test"]}, headers=ADMIN
    )
    assert r.status_code == 201
    v2 = r.json()
    assert v2["created_by"] == "root@https://issuer"
    assert (
        await client.post(f"/api/v1/models/{model['id']}/versions", json={"version": "2"}, headers=ADMIN)
    ).status_code == 409
    r = await client.post(
        f"/api/v1/models/{model['id']}/versions",
        json={"version": "3", "training_dataset": "nope:x"},
        headers=ADMIN,
    )
    assert r.status_code == 422
    r = await client.get(f"/api/v1/models/{model['id']}/versions", headers=READER)
    v1 = r.json()["items"][0]
    assert v1["training_dataset"] == "protodune-sp:np04_reco_run5387"
    assert v1["inputs"] == [tensor]
    r = await client.get("/api/v1/models?tag=production", headers=READER)
    assert [m["name"] for m in r.json()["items"]] == ["emtrack_michel"]
    r = await client.get("/api/v1/models?tag=prod", headers=READER)
    assert r.json()["total"] == 0
    r = await client.get("/api/v1/models?sort=-name", headers=READER)
    assert [m["name"] for m in r.json()["items"]] == ["identity_fp32", "emtrack_michel"]
    r = await client.patch(f"/api/v1/model-versions/{v2['id']}", json={"tags": ["production"]}, headers=ADMIN)
    assert r.json()["tags"] == ["production"]

    await post(client, "facilities", {"name": "lab"})
    backend = await post(
        client, "backends", {"facility": "lab", "address": "10.0.0.1:8001", "enabled": False}
    )
    assert backend["router_id"] == "lab/10.0.0.1:8001"
    dep = {"backend_id": backend["id"], "model": "emtrack_michel", "version": "1"}
    deployment = await post(client, "deployments", dep)
    assert (deployment["facility"], deployment["version"], deployment["state"]) == ("lab", "1", "registered")
    assert (await client.post("/api/v1/deployments", json=dep, headers=ADMIN)).status_code == 409
    bad = {**dep, "version": "9"}
    assert (await client.post("/api/v1/deployments", json=bad, headers=ADMIN)).status_code == 422
    assert (
        await client.post("/api/v1/deployments", json={**dep, "backend_id": 999}, headers=ADMIN)
    ).status_code == 422
    r = await client.get("/api/v1/deployments?facility=lab&model=emtrack_michel", headers=READER)
    assert r.json()["total"] == 1
    r = await client.patch(
        f"/api/v1/deployments/{deployment['id']}", json={"state": "observed"}, headers=ADMIN
    )
    assert r.json()["state"] == "observed"
    assert (await client.get("/api/v1/models?facility=lab", headers=READER)).json()["total"] == 1
    assert (await client.get("/api/v1/backends?model=emtrack_michel", headers=READER)).json()["total"] == 1
    assert (await client.get("/api/v1/backends?model=identity_fp32", headers=READER)).json()["total"] == 0
    assert (await client.get(f"/api/v1/model-versions/{v1['id']}", headers=READER)).json()["version"] == "1"
    # deleting a dataset leaves the model version, without its training dataset
    assert (await client.delete(f"/api/v1/datasets/{dataset['id']}", headers=ADMIN)).status_code == 204
    r = await client.get(f"/api/v1/model-versions/{v1['id']}", headers=READER)
    assert r.json()["training_dataset"] is None
    assert (await client.delete(f"/api/v1/deployments/{deployment['id']}", headers=ADMIN)).status_code == 204
    assert (await client.delete(f"/api/v1/model-versions/{v2['id']}", headers=ADMIN)).status_code == 204
    assert (await client.delete(f"/api/v1/models/{model['id']}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/api/v1/model-versions/{v1['id']}", headers=READER)).status_code == 404


async def test_backends_reach_the_router(client: httpx.AsyncClient, gateway: Gateway) -> None:
    await post(client, "facilities", {"name": "hpc"})
    backend = await post(client, "backends", {"facility": "hpc", "address": "10.0.0.2:8001", "capacity": 4})
    http_only = await post(
        client, "backends", {"facility": "hpc", "address": "10.0.0.2:8000", "protocol": "http"}
    )
    snapshot = gateway.registry.snapshot
    assert set(snapshot.backends) == {"hpc/10.0.0.2:8001"}  # gRPC ones only
    assert snapshot.backends["hpc/10.0.0.2:8001"].capacity == 4
    r = await client.post(
        "/api/v1/backends", json={"facility": "hpc", "address": "10.0.0.2:8001"}, headers=ADMIN
    )
    assert r.status_code == 409
    r = await client.patch(f"/api/v1/backends/{backend['id']}", json={"draining": True}, headers=ADMIN)
    assert r.json()["draining"] is True
    assert gateway.registry.snapshot.backends["hpc/10.0.0.2:8001"].draining
    r = await client.get("/api/v1/backends?facility=hpc&sort=address", headers=READER)
    assert [b["address"] for b in r.json()["items"]] == ["10.0.0.2:8000", "10.0.0.2:8001"]
    facility_id = backend["facility_id"]
    await client.patch(f"/api/v1/facilities/{facility_id}", json={"enabled": False}, headers=ADMIN)
    assert gateway.registry.snapshot.backends == {}
    await client.patch(f"/api/v1/facilities/{facility_id}", json={"enabled": True}, headers=ADMIN)
    assert set(gateway.registry.snapshot.backends) == {"hpc/10.0.0.2:8001"}
    assert (await client.delete(f"/api/v1/backends/{backend['id']}", headers=ADMIN)).status_code == 204
    assert gateway.registry.snapshot.backends == {}
    assert (await client.get(f"/api/v1/backends/{http_only['id']}", headers=READER)).status_code == 200
    assert (await client.delete(f"/api/v1/facilities/{facility_id}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/api/v1/backends/{http_only['id']}", headers=READER)).status_code == 404


async def test_usage_provenance_lookups(client: httpx.AsyncClient, migrated_engine: Engine) -> None:
    def event(job: str, version: str, dataset: str | None = "dune:run1", n: int = 10) -> UsageEvent:
        return UsageEvent(
            model="emtrack", version_requested="", version_served=version, facility="lab",
            backend_id="lab/h:1", subject="alice", issuer="https://issuer", job_id=job, dataset=dataset,
            inferences=n,
        )  # fmt: skip

    write_usage(migrated_engine, [event("job-1", "1"), event("job-1", "1"), event("job-2", "2")])
    write_usage(migrated_engine, [event("job-1", "1", n=5), event("", "2", dataset=None)])
    r = await client.get("/api/v1/usage?job_id=job-1", headers=READER)
    [row] = r.json()["items"]
    assert (row["version"], row["n_requests"], row["n_inferences"]) == ("1", 3, 25)
    assert row["dataset"] == "dune:run1"
    r = await client.get("/api/v1/usage?dataset=dune:run1&sort=-n_inferences", headers=READER)
    assert [u["job_id"] for u in r.json()["items"]] == ["job-1", "job-2"]
    r = await client.get("/api/v1/usage?model=emtrack&version=2", headers=READER)
    assert sorted(str(u["job_id"]) for u in r.json()["items"]) == ["None", "job-2"]
    assert (await client.get("/api/v1/usage?job_id=nope", headers=READER)).json()["total"] == 0


async def test_usage_of_one_job_with_two_datasets_finds_each(
    client: httpx.AsyncClient, migrated_engine: Engine
) -> None:
    def event(dataset: str) -> UsageEvent:
        return UsageEvent(
            model="emtrack", version_requested="", version_served="1", facility="lab",
            backend_id="lab/h:1", subject="alice", issuer="https://issuer", job_id="job-1", dataset=dataset,
            inferences=1,
        )  # fmt: skip

    write_usage(migrated_engine, [event("dune:first"), event("dune:zweite_Läufe")])
    for dataset in ("dune:first", "dune:zweite_Läufe"):
        r = await client.get("/api/v1/usage", params={"dataset": dataset}, headers=READER)
        assert [(u["job_id"], u["dataset"]) for u in r.json()["items"]] == [("job-1", dataset)]
    r = await client.get("/api/v1/usage?job_id=job-1", headers=READER)
    assert r.json()["total"] == 2


async def test_registering_a_deployment_the_consistency_check_inserts_concurrently(
    client: httpx.AsyncClient, migrated_engine: Engine
) -> None:
    """The check observes a new backend's models while `apply` registers them: the admin's POST
    finds no row, the check's 'observed' row lands first, and the POST must register it, not 409."""
    from sqlalchemy import event, insert
    from sqlalchemy.orm import Session

    from gateway.catalog import models as m

    await post(client, "facilities", {"name": "lab"})
    backend = await post(client, "backends", {"facility": "lab", "address": "10.0.0.1:8001"})
    model = await post(client, "models", {"name": "toy", "versions": [{"version": "1"}]})
    [version] = (await client.get(f"/api/v1/models/{model['id']}/versions", headers=READER)).json()["items"]
    raced: list[bool] = []

    def observe_first(session: Session, *_: object) -> None:
        if raced or not any(isinstance(o, m.Deployment) for o in session.new):
            return
        raced.append(True)
        with migrated_engine.begin() as other:  # the consistency check, in its own transaction
            other.execute(
                insert(m.Deployment).values(
                    backend_id=backend["id"], model_version_id=version["id"], state="observed"
                )
            )

    event.listen(Session, "before_flush", observe_first)
    try:
        dep = {"backend_id": backend["id"], "model": "toy", "version": "1"}
        registered = await post(client, "deployments", dep)
    finally:
        event.remove(Session, "before_flush", observe_first)
    assert raced == [True]
    assert registered["state"] == "registered"
    r = await client.get(f"/api/v1/deployments?backend_id={backend['id']}", headers=READER)
    assert [(d["model"], d["state"]) for d in r.json()["items"]] == [("toy", "registered")]
    assert (await client.post("/api/v1/deployments", json=dep, headers=ADMIN)).status_code == 409


async def _catalog_with_one_of_each(client: httpx.AsyncClient) -> dict[str, int]:
    facility = await post(client, "facilities", {"name": "lab", "site": "FNAL"})
    backend = await post(client, "backends", {"facility": "lab", "address": "10.0.0.1:8001"})
    dataset = await post(client, "datasets", {"name": "dune:run1", "storage_uris": ["root://eos/1"]})
    model = await post(client, "models", {"name": "emtrack", "versions": [{"version": "1", "tags": ["a"]}]})
    [version] = (await client.get(f"/api/v1/models/{model['id']}/versions", headers=READER)).json()["items"]
    ids = {"facilities": facility["id"], "backends": backend["id"], "datasets": dataset["id"]}
    ids |= {"models": model["id"], "model-versions": version["id"]}
    return {k: int(str(v)) for k, v in ids.items()}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("datasets", "storage_uris"),
        ("datasets", "metadata"),
        ("datasets", "experiment"),
        ("model-versions", "inputs"),
        ("model-versions", "tags"),
        ("model-versions", "max_batch_size"),
        ("facilities", "site"),
        ("facilities", "enabled"),
        ("backends", "capacity"),
        ("backends", "draining"),
        ("models", "description"),
    ],
)
async def test_patch_with_null_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, path: str, field: str
) -> None:
    ids = await _catalog_with_one_of_each(client)
    before = (await client.get(f"/api/v1/{path}/{ids[path]}", headers=READER)).json()
    r = await client.patch(f"/api/v1/{path}/{ids[path]}", json={field: None}, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert f"{field} may not be null" in r.json()["error"]
    assert [d["loc"] for d in r.json()["detail"]] == [["body", field]]
    assert (await client.get(f"/api/v1/{path}/{ids[path]}", headers=READER)).json() == before
    listing = f"models/{ids['models']}/versions" if path == "model-versions" else path
    assert (await client.get(f"/api/v1/{listing}", headers=READER)).status_code == 200


async def test_patch_with_null_clears_what_may_be_empty(client: httpx.AsyncClient) -> None:
    ids = await _catalog_with_one_of_each(client)
    dataset = f"/api/v1/datasets/{ids['datasets']}"
    await client.patch(dataset, json={"checksum": "adler32:1", "n_events": 5}, headers=ADMIN)
    r = await client.patch(dataset, json={"checksum": None, "n_events": None}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["checksum"], r.json()["n_events"]) == (None, None)
    backend = f"/api/v1/backends/{ids['backends']}"
    await client.patch(backend, json={"http_address": "10.0.0.1:8000"}, headers=ADMIN)
    r = await client.patch(backend, json={"http_address": None}, headers=ADMIN)
    assert (r.status_code, r.json()["http_address"]) == (200, None)


@pytest.mark.parametrize(
    ("method", "url", "body", "where"),
    [
        ("GET", "/api/v1/datasets/2147483648", None, "ident"),
        ("GET", "/api/v1/backends/99999999999999999999", None, "ident"),
        ("DELETE", "/api/v1/facilities/2147483648", None, "ident"),
        ("GET", "/api/v1/facilities?offset=9223372036854775808", None, "offset"),
        ("GET", "/api/v1/deployments?backend_id=2147483648", None, "backend_id"),
        ("GET", "/api/v1/facilities?name=%00", None, "name"),
        ("GET", "/api/v1/usage?job_id=a%00b", None, "job_id"),
        ("POST", "/api/v1/deployments", {"backend_id": 2**31, "model": "m", "version": "1"}, "backend_id"),
        ("POST", "/api/v1/datasets", {"name": "d", "n_events": 2**63}, "n_events"),
        ("POST", "/api/v1/datasets", {"name": "d", "metadata": {"note": "a\x00b"}}, "metadata.note"),
        ("POST", "/api/v1/facilities", {"name": "lab", "site": "F\x00NAL"}, "site"),
        ("POST", "/api/v1/models", {"name": "m", "versions": [{"version": "1", "max_batch_size": 2**31}]},
         "max_batch_size"),
        ("PATCH", "/api/v1/datasets/1", {"size_bytes": 2**64}, "size_bytes"),
    ],
)  # fmt: skip
async def test_out_of_range_and_nul_are_4xx_not_500(
    client: httpx.AsyncClient, method: str, url: str, body: object, where: str
) -> None:
    r = await client.request(method, url, json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert where in r.json()["error"]
    assert r.json()["detail"]


async def test_nan_in_json_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/datasets",
        content=b'{"name": "d", "metadata": {"x": NaN}}',
        headers={**ADMIN, "content-type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert "metadata.x" in r.json()["error"]


async def test_every_error_comes_from_the_one_table_in_one_shape(client: httpx.AsyncClient) -> None:
    from gateway.catalog import api
    from gateway.errors import Conflict, InvalidField, NotFound, PermissionDenied, Unauthenticated, status_of

    assert not hasattr(api, "ApiError")
    await post(client, "facilities", {"name": "lab"})
    answers = {
        Unauthenticated: await client.get("/api/v1/facilities"),
        PermissionDenied: await client.post("/api/v1/facilities", json={"name": "x"}, headers=READER),
        NotFound: await client.get("/api/v1/facilities/999", headers=READER),
        Conflict: await client.post("/api/v1/facilities", json={"name": "lab"}, headers=ADMIN),
        InvalidField: await client.post(
            "/api/v1/backends", json={"facility": "x", "address": "h:1"}, headers=ADMIN
        ),
    }  # fmt: skip
    for kind, r in answers.items():
        assert r.status_code == status_of(kind("x")).http_status, (kind, r.text)
        assert isinstance(r.json()["error"], str)
    # 422: our own checks and FastAPI's validation answer the same shape
    for r in (
        answers[InvalidField],
        await client.post("/api/v1/facilities", json={"name": "has space"}, headers=ADMIN),
        await client.get("/api/v1/facilities?limit=0", headers=READER),
    ):
        assert set(r.json()) == {"error", "detail"}
        assert all(set(d) == {"loc", "msg", "type"} for d in r.json()["detail"])


async def test_a_body_that_is_not_utf8_is_400_in_the_api_shape(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/facilities", content=b"\xe9L\xe9\xe90", headers={**ADMIN, "content-type": "application/json"}
    )
    assert r.status_code == 400
    assert "UTF-8" in r.json()["error"]


async def test_timestamps_carry_their_utc_offset(client: httpx.AsyncClient) -> None:
    created = await post(client, "facilities", {"name": "lab"})
    listed = (await client.get("/api/v1/facilities", headers=READER)).json()["items"][0]
    for value in (created["created_at"], listed["created_at"]):
        assert dt.datetime.fromisoformat(str(value)).utcoffset() == dt.timedelta(0), value


async def test_a_database_outage_is_503_and_says_so(client: httpx.AsyncClient, gateway: Gateway) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from tests.support.net import free_port

    down = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2")
    gateway.catalog._sessions = sessionmaker(down)
    try:
        answer = await client.get("/api/v1/facilities", headers=READER)
    finally:
        down.dispose()
    assert answer.status_code == 503
    assert "unreachable" in answer.json()["error"]
