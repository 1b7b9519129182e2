"""Refusals are counted and logged, one WARNING per reason per interval however many there are."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from gateway.observability.overload import EnvoyOverflowWatch, Refusals
from tests.support.clock import FakeClock


def _count(metrics: CollectorRegistry, frontend: str, reason: str) -> float:
    value = metrics.get_sample_value(
        "sonic_gateway_refused_requests_total", {"frontend": frontend, "reason": reason}
    )
    return value or 0.0


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.overload"]


def test_refusals_are_counted_each_and_logged_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    metrics = CollectorRegistry()
    refusals = Refusals(metrics, log_interval_s=10.0, clock=clock)
    caplog.set_level(logging.WARNING, "gateway.overload")
    for _ in range(500):
        refusals.refused("grpc", "slow_path_overflow")
    assert _count(metrics, "grpc", "slow_path_overflow") == 500
    assert len(_lines(caplog)) == 1
    assert "refused 1 grpc request(s)" in _lines(caplog)[0]
    clock.step(10.0)
    refusals.refused("grpc", "slow_path_overflow", 3)
    lines = _lines(caplog)
    assert len(lines) == 2
    assert "refused 502 grpc request(s) in the last 10 s" in lines[1]  # the 499 held back, and 3
    refusals.refused("http", "slow_path_overflow")  # another reason has its own line
    assert len(_lines(caplog)) == 3
    assert _count(metrics, "grpc", "slow_path_overflow") == 503


async def test_envoy_overflow_counters_become_refusals(caplog: pytest.LogCaptureFixture) -> None:
    stats = {"cluster.sonic_slow_grpc.upstream_rq_active_overflow": 0}

    async def read() -> dict[str, int]:
        return dict(stats)

    metrics = CollectorRegistry()
    watch = EnvoyOverflowWatch(read, Refusals(metrics), {"sonic_slow_grpc": "grpc"})
    caplog.set_level(logging.WARNING, "gateway.overload")
    await watch.poll()
    assert not _lines(caplog)
    stats["cluster.sonic_slow_grpc.upstream_rq_active_overflow"] = 40
    stats["cluster.m_identity_fp32_grpc.upstream_rq_pending_overflow"] = 2
    await watch.poll()
    assert _count(metrics, "grpc", "slow_path_overflow") == 40
    assert _count(metrics, "envoy", "backend_overflow") == 2
    assert any("sonic_slow_grpc" in line for line in _lines(caplog))
    stats["cluster.sonic_slow_grpc.upstream_rq_active_overflow"] = 5  # Envoy restarted: counts anew
    await watch.poll()
    assert _count(metrics, "grpc", "slow_path_overflow") == 45
