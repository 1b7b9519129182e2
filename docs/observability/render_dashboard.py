"""Render grafana-dashboard.json's panels to a PNG from a Prometheus server's data, without Grafana.

Each panel's PromQL goes through Prometheus's HTTP ``query_range`` API; the panels are drawn with
matplotlib at their ``gridPos`` in Grafana's 24-column grid. This is how dashboard.png in this folder
was made (Grafana cannot be installed on the build machine); in production Grafana renders the same
JSON. Needs the optional extra ``docs`` (matplotlib)::

    .venv/bin/python docs/observability/render_dashboard.py --prometheus http://127.0.0.1:9090 \\
        --minutes 4 --out docs/observability/dashboard.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

HERE = Path(__file__).resolve().parent
BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a", "#c4162a"]
ROW_PX, COLS, WIDTH_PX = 34, 24, 2000  # Grafana: 30 px rows plus margins, 24 columns


def fmt(value: float, unit: str) -> str:
    """A value in a Grafana unit, short."""
    if math.isnan(value):
        return "-"
    if unit == "s":
        if value == 0:
            return "0"
        if value < 1e-3:
            return f"{value * 1e6:.0f} µs"
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "percentunit":
        return f"{value * 100:.2g}%"
    suffix = {"reqps": " req/s", "Bps": "B/s"}.get(unit, "")
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return (
                f"{value / scale:.3g} {prefix}{suffix.strip()}" if suffix else f"{value / scale:.3g}{prefix}"
            )
    return f"{value:.3g}{suffix}"


def query_range(
    client: httpx.Client, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    r = client.get("/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step})
    r.raise_for_status()
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip() or "value"


def series_of(
    panel: dict[str, Any], client: httpx.Client, args: argparse.Namespace, start: float, end: float
):
    out = []
    for target in panel.get("targets", []):
        expr = target["expr"].replace("$__rate_interval", args.rate_interval)
        for s in query_range(client, expr, start, end, args.step):
            xs = [dt.datetime.fromtimestamp(float(t), dt.UTC) for t, _ in s["values"]]
            ys = [float(v) for _, v in s["values"]]
            out.append((legend(target.get("legendFormat", ""), s["metric"]), xs, ys))
    return out


def draw_panel(fig: Any, panel: dict[str, Any], data: list[Any], height_units: int) -> None:
    g = panel["gridPos"]
    pad = 0.004
    left, width = g["x"] / COLS + pad, g["w"] / COLS - 2 * pad
    top = 1 - g["y"] / height_units
    height = g["h"] / height_units - 2 * pad
    bottom = top - pad - height
    frame = fig.add_axes((left, bottom, width, height))
    frame.set_facecolor(PANEL)
    frame.set_xticks([])
    frame.set_yticks([])
    for spine in frame.spines.values():
        spine.set_color(GRID)
    frame.text(0.01, 0.97, panel["title"], color=TEXT, fontsize=11, fontweight="bold", va="top",
               transform=frame.transAxes)  # fmt: skip
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    if panel["type"] == "stat":
        last = next((y for _, _, ys in data for y in reversed(ys) if not math.isnan(y)), float("nan"))
        frame.text(0.5, 0.42, fmt(last, unit), color=COLORS[0], fontsize=30, fontweight="bold",
                   ha="center", va="center", transform=frame.transAxes)  # fmt: skip
        if data:
            spark = fig.add_axes((left, bottom, width, height * 0.35))
            spark.patch.set_alpha(0)
            spark.fill_between(data[0][1], data[0][2], color=COLORS[0], alpha=0.2)
            spark.axis("off")
        return
    # Leave room for the title above and the legend below, as Grafana does.
    # As many legend columns as the panel's width fits (about 110 characters per 8 grid columns).
    longest = max((len(name) for name, _, _ in data), default=10)
    ncol = max(1, min(4, int(110 * g["w"] / 8 / (longest + 6))))
    legend_rows = max(1, math.ceil(len(data) / ncol))
    legend_h = min(0.45, 0.075 * legend_rows)
    ax = fig.add_axes((left + width * 0.09, bottom + height * (legend_h + 0.09), width * 0.88,
                       height * (0.84 - legend_h - 0.09)))  # fmt: skip
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.grid(color=GRID, linewidth=0.6)
    ax.tick_params(colors=TEXT, labelsize=8, length=0)
    log = defaults.get("custom", {}).get("scaleDistribution", {}).get("type") == "log"
    for i, (name, xs, ys) in enumerate(data):
        ax.plot(xs, ys, color=COLORS[i % len(COLORS)], linewidth=1.5, label=name)
    if log:
        ax.set_yscale("log")
    elif "min" in defaults:
        ax.set_ylim(bottom=defaults["min"])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v, unit)))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=dt.UTC))
    if not data:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        return
    ax.legend(loc="upper left", bbox_to_anchor=(-0.09, -0.12), ncol=ncol, frameon=False, fontsize=8,
              labelcolor=TEXT, handlelength=1.2, columnspacing=1.0)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dashboard", default=str(HERE / "grafana-dashboard.json"))
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=5.0, help="time range ending at --end (default 5)")
    parser.add_argument("--end", type=float, default=None, help="unix time (default: now)")
    parser.add_argument("--step", type=float, default=5.0, help="query resolution in seconds")
    parser.add_argument("--rate-interval", default="30s", help="what $__rate_interval becomes")
    parser.add_argument("--out", default=str(HERE / "dashboard.png"))
    args = parser.parse_args()
    dashboard = json.loads(Path(args.dashboard).read_text())
    end = args.end or time.time()
    start = end - args.minutes * 60
    panels = dashboard["panels"]
    height_units = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) + 2  # + header
    fig = plt.figure(figsize=(WIDTH_PX / 100, height_units * ROW_PX / 100), dpi=100, facecolor=BG)
    with httpx.Client(base_url=args.prometheus, timeout=30, trust_env=False) as client:
        for panel in panels:
            shifted = {**panel, "gridPos": {**panel["gridPos"], "y": panel["gridPos"]["y"] + 2}}
            draw_panel(fig, shifted, series_of(panel, client, args, start, end), height_units)
    when = (f"{dt.datetime.fromtimestamp(start, dt.UTC):%Y-%m-%d %H:%M}"
            f"-{dt.datetime.fromtimestamp(end, dt.UTC):%H:%M} UTC")  # fmt: skip
    fig.text(
        0.005,
        1 - 0.9 / height_units,
        dashboard["title"],
        color=TEXT,
        fontsize=18,
        fontweight="bold",
        va="center",
    )
    fig.text(0.995, 1 - 0.9 / height_units,
             f"{when} · Prometheus {args.prometheus} · rendered by docs/observability/render_dashboard.py "
             "from grafana-dashboard.json (Grafana renders the same JSON in production)",
             color="#8e8e8e", fontsize=9, ha="right", va="center")  # fmt: skip
    fig.savefig(args.out, facecolor=BG)
    print(f"wrote {args.out} ({len(panels)} panels, {when})")


if __name__ == "__main__":
    main()
