"""The control-plane scale scenario's simulated catalog and its goals (no Envoy started, nothing timed)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks.controlplane import REAL_MODEL, Catalog, _goals, _slope, fake_backend, fake_model, model_view
from gateway.routing.backend import Backend

REAL = Backend(
    id="real/127.0.0.1:9001", facility="real", grpc_address="127.0.0.1:9001", http_address="127.0.0.1:9000"
)


def test_catalog_has_facilities_times_models_and_the_real_model_last() -> None:
    view = Catalog(10, 20, REAL).view()
    names = [m.name for m in view.models]
    assert len(names) == 20
    # The real model's routes come last in Envoy's route table: the worst place for a linear match.
    assert names[-1] == REAL_MODEL
    assert names[0] == fake_model(0)
    fake = model_view(view, fake_model(3))
    assert len(fake.grpc) == 10
    assert len(fake.http) == 10
    assert {e.host for e in fake.grpc} <= {f"192.0.2.{i}" for i in range(1, 251)}  # TEST-NET-1
    real = model_view(view, REAL_MODEL)
    assert [(e.host, e.port) for e in real.grpc] == [("127.0.0.1", 9001)]


def test_reference_catalog_is_the_real_model_alone() -> None:
    view = Catalog(1, 1, REAL).view()
    assert [m.name for m in view.models] == [REAL_MODEL]


def test_changes_show_in_the_view() -> None:
    catalog = Catalog(5, 4, REAL)
    target = fake_backend(0)
    catalog.weights[target.id] = 3.0
    weights = {e.backend_id: e.weight for e in model_view(catalog.view(), fake_model(0)).grpc}
    assert weights[target.id] == 300
    assert weights[fake_backend(1).id] == 100
    catalog.extra_models += 1
    assert len(catalog.view().models) == 5
    catalog.drained.add(target.id)
    for model in catalog.view().models:
        if model.name != REAL_MODEL:
            assert target.id not in {e.backend_id for e in model.grpc}
            assert len(model.http) == 4


def test_slope_is_the_growth_exponent() -> None:
    assert _slope([100.0, 1000.0], [10.0, 100.0]) == pytest.approx(1.0)
    assert _slope([100.0, 1000.0], [50.0, 100.0]) < 1.0
    assert math.isnan(_slope([100.0], [1.0]))


def _row(size: str, f: int, m: int, endpoints: int, push: int, **more: Any) -> dict[str, Any]:
    return {
        "size": size,
        "facilities": f,
        "models": m,
        "endpoints": endpoints,
        "full_push_bytes": push,
        **more,
    }


def test_goals_report_a_size_envoy_could_not_load() -> None:
    ran = dict(weight_reach_s=0.1, model_reach_s=0.2, drain_reach_s=0.3, rss_mb=70.0, allocated_mb=8.0)
    rows = [
        _row("1x1", 1, 1, 2, 7000, rss_mb=69.0, allocated_mb=7.0, cpu_ratio_to_1x1=1.0),
        _row("10x20", 10, 20, 400, 200_000, **ran, cpu_ratio_to_1x1=1.02),
        _row("50x20", 50, 20, 2000, 1_000_000, **{**ran, "rss_mb": 80.0, "allocated_mb": 12.0}),
        _row("50x200", 50, 200, 20000, 10_000_000, error="envoy exited: inotify"),
    ]
    goals = {
        g["goal"].split(" (")[0].split(":")[0]: g
        for g in _goals(rows, [(1, 1), (10, 20), (50, 20), (50, 200)])
    }
    assert goals["Envoy loads and serves every size up to 50x200"]["met"] is False
    assert goals["a drained facility reaches Envoy in < 2 s"]["value"] == pytest.approx(0.3)
    assert goals["push size grows no worse than linearly"]["value"] == pytest.approx(1.0)
    assert goals["Envoy RSS grows no worse than linearly"]["met"] is True
    cpu = [g for g in goals.values() if g["goal"].startswith("data path CPU")]
    assert cpu
    assert cpu[0]["value"] == pytest.approx(1.02)
