"""Fixtures shared by the whole suite: real Triton servers and a gateway in front of them.

Two Triton processes (the bundled ``tritonserver`` binary, CPU) start once per session and serve
``model_repository/``; tests that need them are marked ``triton``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.config import Settings, load_settings
from gateway.triton.launcher import TritonPorts, TritonServer
from tests.support.net import free_port

REPO = Path(__file__).resolve().parents[1]

# Most tests drive the Python frontends (the slow path) directly; tests of the Envoy data plane
# (tests/envoy/) turn it on explicitly, which overrides this.
os.environ.setdefault("SONIC_GATEWAY_ENVOY__ENABLED", "false")
# Many gateways run in one test session: each takes any free port for its metrics.
os.environ.setdefault("SONIC_GATEWAY_LISTEN__METRICS", "127.0.0.1:0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In CI the real services are required: a skipped database or Redis test is a failure there.
    if os.environ.get("SONIC_TEST_REQUIRE_SERVICES") != "1":
        return
    for item in items:
        for marker, variable in (("postgres", "SONIC_TEST_DATABASE_URL"), ("redis", "SONIC_TEST_REDIS_URL")):
            if item.get_closest_marker(marker) and not os.environ.get(variable):
                raise pytest.UsageError(f"{variable} must be set in CI ({item.nodeid} needs it)")


@pytest.fixture(scope="session")
def tritons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[TritonServer]]:
    """Two real Triton facilities ('lab' and 'hpc') on free loopback ports."""
    logs = tmp_path_factory.mktemp("triton-logs")
    servers = [
        TritonServer(
            TritonPorts(free_port(), free_port(), free_port()),
            model_repository=REPO / "model_repository",
            workdir=REPO / ".sonic" / "triton",
            log_path=logs / f"{name}.log",
        )
        for name in ("lab", "hpc")
    ]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(180)
        yield servers
    finally:
        for server in servers:
            server.stop()


def gateway_settings(tritons: list[TritonServer], **overrides: object) -> Settings:
    backends = [
        {
            "facility": facility,
            "grpc": t.grpc_address,
            "http": f"127.0.0.1:{t.ports.http}",
            "metrics": f"127.0.0.1:{t.ports.metrics}",
        }
        for facility, t in zip(("lab", "hpc"), tritons, strict=True)
    ]
    values: dict[str, object] = {
        "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "backends": backends,
        "routing": {"health_interval_s": 0.5},
        "auth": {"enabled": False},
    }
    values.update(overrides)
    return load_settings(None, **values)


@pytest.fixture
async def gateway(tritons: list[TritonServer]) -> AsyncIterator[Gateway]:
    from prometheus_client import CollectorRegistry

    from tests.support.waiting import eventually

    gw = Gateway(gateway_settings(tritons), metrics_registry=CollectorRegistry())
    await gw.start()
    try:
        # Tests start once both facilities are routable: on a loaded machine the first health probe
        # can come after a test's first request, which then (rightly) finds no backend.
        await eventually(
            lambda: len(gw.registry.snapshot.healthy_backends()) >= len(tritons), 60, "the Tritons' health"
        )
        yield gw
    finally:
        await gw.stop(grace_s=1)
