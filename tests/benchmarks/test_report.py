"""Result numbers, ratios, tables and files of the benchmark suite (no timing involved)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.report import (
    Sample,
    compare,
    goal,
    load_result,
    markdown_table,
    percentile,
    render_markdown,
    write_index,
    write_result,
)


def test_percentile_interpolates() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_sample_summary_accumulates_rounds() -> None:
    sample = Sample()
    sample.add([0.001] * 100, 1.0, 100 * 9216, 0.05)
    sample.add([0.003] * 100, 1.0, 100 * 9216, 0.15)
    s = sample.summary()
    assert s["requests"] == 200
    assert s["throughput_rps"] == pytest.approx(100.0)
    assert s["p50_ms"] == pytest.approx(2.0)
    assert s["proxy_cpu_ms_per_req"] == pytest.approx(1.0)
    assert s["proxy_cpu_s_per_gb"] == pytest.approx(0.2 / (200 * 9216 / 1e9))
    assert "first_error" not in s


def test_direct_arm_has_no_proxy_cpu() -> None:
    sample = Sample()
    sample.add([0.002], 0.5, 9216, None, errors=1, first_error="boom")
    s = sample.summary()
    assert "proxy_cpu_ms_per_req" not in s
    assert s["errors"] == 1
    assert s["first_error"] == "boom"


def test_compare_against_the_baseline_arm() -> None:
    rows = [
        {"batch": 1, "arm": "direct", "throughput_rps": 100.0, "p50_ms": 1.0, "p99_ms": 2.0},
        {"batch": 1, "arm": "gateway", "throughput_rps": 80.0, "p50_ms": 1.5, "p99_ms": 3.0},
        {"batch": 2, "arm": "gateway", "throughput_rps": 10.0, "p50_ms": 1.0, "p99_ms": 1.0},
    ]
    compare(rows, ("batch",))
    assert rows[0]["throughput_ratio"] == pytest.approx(1.0)
    assert rows[1]["throughput_ratio"] == pytest.approx(0.8)
    assert rows[1]["added_p50_ms"] == pytest.approx(0.5)
    assert rows[1]["added_p99_ms"] == pytest.approx(1.0)
    assert "throughput_ratio" not in rows[2]  # no baseline for batch 2: no invented ratio


def test_per_round_ratios_pair_arms_of_the_same_round() -> None:
    """A slow round slows both arms: the paired median sees 0.9 where pooled totals are pulled around."""
    base, arm = Sample(), Sample()
    for rps, ratio in ((100.0, 0.9), (40.0, 0.9), (100.0, 0.5), (100.0, 0.9), (100.0, 0.95)):
        base.add([0.001] * int(rps), 1.0, 0, None)
        arm.add([0.001] * int(rps * ratio), 1.0, 0, None)
    rows = [{"arm": "direct", **base.summary()}, {"arm": "gateway", **arm.summary()}]
    compare(rows, ())
    assert rows[1]["round_ratio_median"] == pytest.approx(0.9)
    assert rows[1]["round_ratio_range"] == "0.50-0.95"
    assert rows[1]["throughput_ratio"] == pytest.approx((90 + 36 + 50 + 90 + 95) / 440)


def test_goal_directions() -> None:
    assert goal("at least", 0.95, 0.9)["met"] is True
    assert goal("at least", 0.85, 0.9)["met"] is False
    assert goal("at most", 2.5, 2.0, at_most=True)["met"] is False


def test_markdown_table_formats_cells() -> None:
    table = markdown_table(
        [{"arm": "gateway", "x": 1234.5, "y": 0.01234, "ok": False, "n": float("nan")}],
        [("arm", "arm"), ("x", "X"), ("y", "Y"), ("ok", "met"), ("n", "N"), ("missing", "M")],
    )
    lines = table.splitlines()
    assert lines[0] == "| arm | X | Y | met | N | M |"
    assert lines[1] == "| --- | --- | --- | --- | --- | --- |"
    assert lines[2] == "| gateway | 1234 | 0.0123 | **no** | - | - |"


def test_result_files_round_trip(tmp_path: Path) -> None:
    result = {
        "scenario": "demo",
        "title": "a demo",
        "command": "python -m benchmarks.run --scenario demo",
        "rows": [{"arm": "direct", "throughput_rps": float("inf")}],
        "goals": [goal("ratio", 1.0, 0.9)],
        "notes": ["a note"],
    }
    md = write_result(tmp_path, result, [("arm", "arm"), ("throughput_rps", "req/s")])
    data = load_result(tmp_path / "demo.json")
    assert data["rows"][0]["throughput_rps"] is None  # non-finite numbers become null, JSON stays valid
    json.loads((tmp_path / "demo.json").read_text())
    text = md.read_text()
    assert text == render_markdown(data, [("arm", "arm"), ("throughput_rps", "req/s")])
    assert "Command: `python -m benchmarks.run --scenario demo`" in text
    assert "| ratio | 1.00 | 0.9 | yes |" in text
    assert "- a note" in text
    index = write_index(tmp_path, ["missing", "demo"]).read_text()
    assert "## demo: a demo" in index


def test_load_result_refuses_other_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"rows": []}')
    with pytest.raises(ValueError, match="not a benchmark result"):
        load_result(path)


def test_cached_check_cost_runs_the_gateways_auth_code(tmp_path: Path) -> None:
    """The auth scenario's in-process timing builds the gateway's real authenticator (API drift would
    break the benchmark silently otherwise) and reports a finite per-call cost."""
    from benchmarks.authcost import cached_check_us

    us = cached_check_us(tmp_path / "keys", calls=200)
    assert 0 < us < math.inf
    assert (tmp_path / "keys").is_dir()  # the dev issuer's keys, as the benchmark gateways use them
