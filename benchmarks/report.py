"""Numbers from load runs, and the outputs: results JSON, a Markdown table per scenario, PNG plots."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GB = 1e9


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class Sample:
    """One arm of one configuration, accumulated over interleaved rounds."""

    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    request_bytes: int = 0
    proxy_cpu_s: float | None = None
    errors: int = 0
    first_error: str = ""
    round_rps: list[float] = field(default_factory=list)  # one throughput per round, for paired ratios
    envoy_cpu_s: float | None = None  # the part of proxy_cpu_s spent in the gateway's Envoy
    fast_requests: int | None = None  # requests the gateway's Envoy sent straight to a backend
    sent_requests: int = 0  # requests sent, warm-up included (what fast_requests is a share of)

    def add(
        self,
        latencies: Iterable[float],
        elapsed_s: float,
        request_bytes: int,
        proxy_cpu_s: float | None,
        errors: int = 0,
        first_error: str = "",
        *,
        envoy_cpu_s: float | None = None,
        fast_requests: int | None = None,
        sent_requests: int = 0,
    ) -> None:
        latencies = list(latencies)
        self.latencies.extend(latencies)
        self.elapsed_s += elapsed_s
        if elapsed_s > 0:
            self.round_rps.append(len(latencies) / elapsed_s)
        self.request_bytes += request_bytes
        if proxy_cpu_s is not None:
            self.proxy_cpu_s = (self.proxy_cpu_s or 0.0) + proxy_cpu_s
        self.errors += errors
        self.first_error = self.first_error or first_error
        if envoy_cpu_s is not None:
            self.envoy_cpu_s = (self.envoy_cpu_s or 0.0) + envoy_cpu_s
        if fast_requests is not None:
            self.fast_requests = (self.fast_requests or 0) + fast_requests
            self.sent_requests += sent_requests

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        n = self.requests
        out: dict[str, Any] = {
            "requests": n,
            "throughput_rps": n / self.elapsed_s if self.elapsed_s > 0 else math.nan,
            "mb_per_s": self.request_bytes / 1e6 / self.elapsed_s if self.elapsed_s > 0 else math.nan,
            "p50_ms": percentile(self.latencies, 50) * 1e3,
            "p99_ms": percentile(self.latencies, 99) * 1e3,
            "errors": self.errors,
        }
        if self.first_error:
            out["first_error"] = self.first_error
        out["round_rps"] = list(self.round_rps)
        if self.proxy_cpu_s is not None and n:
            out["proxy_cpu_ms_per_req"] = self.proxy_cpu_s / n * 1e3
            out["proxy_cpu_s_per_gb"] = (
                self.proxy_cpu_s / (self.request_bytes / GB) if self.request_bytes else math.nan
            )
            if self.envoy_cpu_s is not None:
                out["envoy_cpu_ms_per_req"] = self.envoy_cpu_s / n * 1e3
                out["python_cpu_ms_per_req"] = (self.proxy_cpu_s - self.envoy_cpu_s) / n * 1e3
        if self.fast_requests is not None and self.sent_requests:
            out["fast_path_share"] = self.fast_requests / self.sent_requests
        return out


def compare(rows: list[dict[str, Any]], key: Sequence[str], baseline_arm: str = "direct") -> None:
    """Add ``throughput_ratio`` and ``added_p50_ms``/``added_p99_ms`` against the baseline arm."""
    base: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if row["arm"] == baseline_arm:
            base[tuple(row[k] for k in key)] = row
    for row in rows:
        ref = base.get(tuple(row[k] for k in key))
        if ref is None:
            continue
        row["throughput_ratio"] = row["throughput_rps"] / ref["throughput_rps"]
        # Arms of one round ran back to back, so their ratio cancels the machine's slow drifts (other
        # tenants, CPU frequency); the median over rounds resists the odd disturbed round.
        rounds = zip(row.get("round_rps", ()), ref.get("round_rps", ()), strict=False)
        pairs = [a / b for a, b in rounds if b > 0]
        if pairs:
            row["round_ratio_median"] = statistics.median(pairs)
            row["round_ratio_range"] = f"{min(pairs):.2f}-{max(pairs):.2f}"
        row["added_p50_ms"] = row["p50_ms"] - ref["p50_ms"]
        row["added_p99_ms"] = row["p99_ms"] - ref["p99_ms"]


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return "-" if value is None else str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub table of ``rows`` with ``columns`` as (key, heading); missing values print as '-'."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "| " + " | ".join("---" for _ in columns) + " |"
    body = ["| " + " | ".join(_cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join([head, sep, *body])


def goal(description: str, value: float, limit: float, *, at_most: bool = False) -> dict[str, Any]:
    met = value <= limit if at_most else value >= limit
    return {"goal": description, "value": value, "limit": limit, "met": bool(met)}


def render_markdown(result: dict[str, Any], columns: Sequence[tuple[str, str]]) -> str:
    parts = [f"## {result['scenario']}: {result['title']}", ""]
    if result.get("command"):
        parts += [f"Command: `{result['command']}`", ""]
    parts += [markdown_table(result["rows"], columns), ""]
    if result.get("goals"):
        parts += [
            markdown_table(
                result["goals"], [("goal", "goal"), ("value", "measured"), ("limit", "limit"), ("met", "met")]
            ),
            "",
        ]
    parts += [f"- {note}" for note in result.get("notes", [])]
    return "\n".join(parts).rstrip() + "\n"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_result(outdir: Path, result: dict[str, Any], columns: Sequence[tuple[str, str]]) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    name = result["scenario"]
    clean = _clean(result)  # the table shows exactly what the JSON holds
    (outdir / f"{name}.json").write_text(json.dumps(clean, indent=1, sort_keys=True) + "\n")
    path = outdir / f"{name}.md"
    path.write_text(render_markdown(clean, columns))
    return path


def load_result(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    for key in ("scenario", "title", "rows"):
        if key not in data:
            raise ValueError(f"{path} is not a benchmark result: no {key!r}")
    return data


def write_index(outdir: Path, order: Sequence[str]) -> Path:
    """docs/benchmarks/README.md: every scenario's table, in suite order, from the files present."""
    parts = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks.run` (`make bench`); one section per scenario, "
        "JSON next to each table. Ratios within one run are what count (shared, noisy machine).",
        "",
    ]
    for name in order:
        md = outdir / f"{name}.md"
        if md.is_file():
            parts.append(md.read_text())
            png = outdir / f"{name}.png"
            if png.is_file():
                parts += [f"![{name}]({name}.png)", ""]
    path = outdir / "README.md"
    path.write_text("\n".join(parts))
    return path


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; None (said once per plot) when not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot", flush=True)
        return None
    return plt


def plot(
    path: Path, series: Sequence[dict[str, Any]], *, xlabel: str, ylabel: str, title: str, logx: bool = False
) -> bool:
    """One PNG with a line per series ({label, x, y, style?}); False when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for s in series:
        ax.plot(s["x"], s["y"], s.get("style", "o-"), label=s["label"])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logx:
        ax.set_xscale("log", base=2)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def bar_plot(
    path: Path,
    labels: Sequence[str],
    groups: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    title: str,
    hline: float | None = None,
) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 0.9), 4.5), dpi=110)
    width = 0.8 / max(1, len(groups))
    for i, (name, values) in enumerate(groups.items()):
        xs = [j + i * width for j in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    if hline is not None:
        ax.axhline(hline, color="k", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
