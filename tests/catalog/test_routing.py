"""Catalog backends reach the router: after an admin write at once, after another replica's write by
the periodic refresh; health probing then routes to them. No database query per inference."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gateway.app import Gateway
from gateway.catalog import models as m
from tests.catalog.support import ADMIN
from tests.support.fake_triton import FakeTriton, Script


async def _until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def test_registering_a_backend_routes_to_it(client: httpx.AsyncClient, gateway: Gateway) -> None:
    fake = FakeTriton("lab", Script(models={"toy": ["1", "2"]}))
    await fake.start()
    await gateway.health.start()
    try:
        assert gateway.registry.snapshot.candidates("toy") == []
        r = await client.post("/api/v1/facilities", json={"name": "lab"}, headers=ADMIN)
        assert r.status_code == 201
        r = await client.post(
            "/api/v1/backends", json={"facility": "lab", "address": fake.address}, headers=ADMIN
        )
        assert r.status_code == 201
        await _until(lambda: gateway.registry.snapshot.candidates("toy", "2"))
        [backend] = gateway.registry.snapshot.candidates("toy")
        assert backend.id == f"lab/{fake.address}"
        await client.patch(f"/api/v1/backends/{r.json()['id']}", json={"enabled": False}, headers=ADMIN)
        assert gateway.registry.snapshot.candidates("toy") == []
    finally:
        await gateway.health.stop()
        await fake.stop()


async def test_periodic_refresh_sees_other_replicas_writes(gateway: Gateway, migrated_engine: Engine) -> None:
    gateway.catalog.sync.interval_s = 0.05
    await gateway.catalog.sync.stop()
    await gateway.catalog.sync.start(migrated_engine)
    with Session(migrated_engine) as session:  # another replica registers a backend
        session.add(m.Facility(name="hpc", backends=[m.Backend(address="10.1.0.1:8001")]))
        session.commit()
    await _until(lambda: "hpc/10.1.0.1:8001" in gateway.registry.snapshot.backends)


async def test_static_backends_are_kept(migrated_engine: Engine, db_url: str) -> None:
    from tests.catalog.support import make_gateway

    gw = make_gateway(db_url, backends=[{"facility": "static", "grpc": "127.0.0.1:1"}])
    with Session(migrated_engine) as session:
        session.add(m.Facility(name="cat", backends=[m.Backend(address="127.0.0.1:2")]))
        session.commit()
    await gw.catalog.start()
    try:
        assert set(gw.registry.snapshot.backends) == {"static/127.0.0.1:1", "cat/127.0.0.1:2"}
    finally:
        await gw.catalog.stop()
