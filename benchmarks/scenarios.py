"""The seven scenarios. Each starts its own processes, runs its arms side by side, returns a result."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.authcost import cached_check_us
from benchmarks.common import EMTRACK, IDENTITY, Arm, interleaved, measure, wait_servable
from benchmarks.envoy import EnvoyFrontend
from benchmarks.eq4 import (
    PAPER_PATCHES_PER_EVENT,
    LatencyModel,
    cpu_for_saturation,
    gpu_time,
    paper_model,
)
from benchmarks.haproxy import Frontend
from benchmarks.load import LoadPool, LoadSpec, make_patches
from benchmarks.procs import GatewayProc, Processes, delay_repo, free_port, log, tree_cpu_seconds
from benchmarks.report import Sample, bar_plot, compare, goal, plot
from gateway.triton.launcher import DEFAULT_MODEL_REPOSITORY

Columns = list[tuple[str, str]]


@dataclass
class Context:
    workdir: Path
    outdir: Path
    quick: bool
    workers: int
    command: str
    only: str | None = None  # run only configurations whose key contains this
    rounds: int | None = None  # overhead/http rounds (None: the scenario's default)
    variant_env: dict[str, str] | None = None  # a second gateway arm with this environment


PROXY_COLUMNS: Columns = [
    ("model", "model"),
    ("batch", "batch"),
    ("concurrency", "conc"),
    ("arm", "arm"),
    ("requests", "requests"),
    ("throughput_rps", "req/s"),
    ("throughput_ratio", "ratio to direct"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("added_p50_ms", "added p50 ms"),
    ("added_p99_ms", "added p99 ms"),
    ("proxy_cpu_ms_per_req", "proxy CPU ms/req"),
    ("envoy_cpu_ms_per_req", "of which Envoy"),
    ("proxy_cpu_s_per_gb", "proxy CPU s/GB"),
    ("fast_path_share", "Envoy fast path"),
    ("errors", "errors"),
]

PLAIN_ENVOY = "envoy"  # the plain-Envoy arm's name


def gateway_arm(name: str, gw: GatewayProc, port: int, tokens: tuple[str, ...]) -> Arm:
    """The gateway as an arm: CPU of its whole tree (Python + Envoy), Envoy's part and path counted."""
    return Arm(name, f"127.0.0.1:{port}", tokens, gw.proc.pid, gw.envoy_pid, gw.admin)


def _proxy_rows(
    samples: dict[tuple[str, str], Sample], configs: list[dict[str, Any]], arms: list[Arm]
) -> list[dict[str, Any]]:
    rows = []
    for cfg in configs:
        for arm in arms:
            rows.append(
                {
                    "model": cfg["model"],
                    "batch": cfg["batch"],
                    "concurrency": cfg["concurrency"],
                    "arm": arm.name,
                    **samples[(cfg["key"], arm.name)].summary(),
                }
            )
    compare(rows, ("model", "batch", "concurrency"))
    return rows


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    raise KeyError(f"no result row for {match}")


def _configs(
    model: dict[str, Any], batches: list[int], concurrencies: list[int], duration: float
) -> list[dict[str, Any]]:
    return [
        {**model, "batch": b, "concurrency": c, "duration_s": duration, "key": f"{model['model']}/b{b}/c{c}"}
        for b in batches
        for c in concurrencies
    ]


def _proxy_goals(rows: list[dict[str, Any]], gateway_arm: str = "gateway") -> list[dict[str, Any]]:
    try:
        return _proxy_goals_of(rows, gateway_arm)
    except KeyError:  # a filtered run (--only) lacks some of the rows the goals compare
        return []


def _proxy_goals_of(rows: list[dict[str, Any]], gateway_arm: str) -> list[dict[str, Any]]:
    """Issue 13's goals for the gRPC scenario, as ratios between arms of this run (4 clients)."""

    def at(batch: int, arm: str) -> dict[str, Any]:
        return _row(rows, model="identity_fp32", batch=batch, concurrency=4, arm=arm)

    gw, env, ha = at(1, gateway_arm), at(1, PLAIN_ENVOY), at(1, "haproxy")
    big_gw, big_env, big_ha = at(1693, gateway_arm), at(1693, PLAIN_ENVOY), at(1693, "haproxy")
    return [
        goal(
            "batch 1 c4: gateway CPU/req (Envoy + Python) over plain Envoy's <= 1.5",
            gw["proxy_cpu_ms_per_req"] / env["proxy_cpu_ms_per_req"],
            1.5,
            at_most=True,
        ),
        goal(
            "batch 1 c4: gateway CPU/req (Envoy + Python) over HAProxy's <= 3",
            gw["proxy_cpu_ms_per_req"] / ha["proxy_cpu_ms_per_req"],
            3.0,
            at_most=True,
        ),
        goal(
            "batch 1 c4: gateway added p50 over plain Envoy's <= 1.5",
            # An added p50 can be below the resolution (or negative): floor it at 0.1 ms.
            max(gw["added_p50_ms"], 0.1) / max(env["added_p50_ms"], 0.1),
            1.5,
            at_most=True,
        ),
        goal(
            "batch 1693 c4: gateway/direct minus HAProxy/direct >= 0",
            big_gw["throughput_ratio"] - big_ha["throughput_ratio"],
            0.0,
        ),
        goal(
            "batch 1693 c4: gateway/direct over plain Envoy/direct >= 0.95",
            big_gw["throughput_ratio"] / big_env["throughput_ratio"],
            0.95,
        ),
    ]


def _http_goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        gw = _row(rows, model="identity_fp32", batch=1693, concurrency=4, arm="gateway")
        ha = _row(rows, model="identity_fp32", batch=1693, concurrency=4, arm="haproxy")
    except KeyError:
        return []
    return [
        goal(
            "REST batch 1693 c4 (binary tensors): gateway/direct minus HAProxy/direct >= 0",
            gw["throughput_ratio"] - ha["throughput_ratio"],
            0.0,
        )
    ]


# -- 1 and 3: overhead over gRPC and over HTTP ---------------------------------------------------------


def _overhead(ctx: Context, protocol: str) -> tuple[dict[str, Any], Columns]:
    with Processes(ctx.workdir) as procs, LoadPool(4) as pool:
        models = ["identity_fp32"] + (["emtrack_michel"] if protocol == "grpc" else [])
        log(
            f"starting Triton ({', '.join(models)}), the gateway (Envoy + Python, auth on), "
            "plain Envoy and HAProxy"
        )
        (triton,) = procs.tritons([DEFAULT_MODEL_REPOSITORY], models)
        gw = procs.gateway([triton], auth=True, workers=ctx.workers)
        token = gw.tokens(1)[0]
        ha_port, env_port = free_port(), free_port()
        backend = triton.grpc_address if protocol == "grpc" else f"127.0.0.1:{triton.ports.http}"
        ha = procs.haproxy([Frontend("infer", ha_port, protocol, "leastconn", (backend,))])  # type: ignore[arg-type]
        env = procs.envoy([EnvoyFrontend("infer", env_port, protocol, (backend,))])  # type: ignore[arg-type]
        gw_port = gw.grpc_port if protocol == "grpc" else gw.http_port
        arms = [
            Arm("direct", backend),
            gateway_arm("gateway", gw, gw_port, (token,)),
            Arm(PLAIN_ENVOY, f"127.0.0.1:{env_port}", (), env.proc.pid),
            Arm("haproxy", f"127.0.0.1:{ha_port}", (), ha.pid),
        ]
        for arm in arms:
            wait_servable(arm.url, "identity_fp32", arm.tokens[0] if arm.tokens else None, protocol=protocol)
        duration = 2.0 if ctx.quick else 3.0
        rounds = ctx.rounds or (1 if ctx.quick else 3)
        base = LoadSpec(url="", model="", batch=1, protocol=protocol)  # type: ignore[arg-type]
        configs = _configs(IDENTITY, [1, 235, 1693], [1, 4], duration)
        label = "overhead" if protocol == "grpc" else "http"
        if ctx.variant_env:
            var = procs.gateway(
                [triton], auth=True, workers=ctx.workers, name="gateway-variant", env=ctx.variant_env
            )
            port = var.grpc_port if protocol == "grpc" else var.http_port
            arms.insert(2, gateway_arm("gateway variant", var, port, (token,)))
            wait_servable(arms[2].url, "identity_fp32", token, protocol=protocol)
        configs = [c for c in configs if not ctx.only or ctx.only in c["key"]]
        samples = interleaved(pool, arms, configs, base, rounds, label)
        slow: list[dict[str, Any]] = []
        if protocol == "grpc":
            # The real CNN on CPU (~0.65 s per 1693 batch): the proxies' share of a real request.
            # Batch 1693 at c4 would take ~6 s a request on this CPU: c1 only.
            slow = _configs(EMTRACK, [235], [1, 4], 3.0 if ctx.quick else 4.0)
            if not ctx.quick:
                slow += _configs(EMTRACK, [1693], [1], 6.0)
            slow = [c for c in slow if not ctx.only or ctx.only in c["key"]]
            samples.update(interleaved(pool, arms, slow, base, 1, label))
        rows = _proxy_rows(samples, configs + slow, arms)
    title = (
        "proxy overhead over gRPC (tritonclient.grpc)"
        if protocol == "grpc"
        else "proxy overhead over HTTP (tritonclient.http, binary tensors)"
    )
    result = {
        "scenario": label,
        "title": title,
        "command": ctx.command,
        "rows": rows,
        # The goals are defined on the gRPC scenario; the HTTP one reports the same figures.
        "goals": _proxy_goals(rows) if protocol == "grpc" else _http_goals(rows),
        "params": {"rounds": rounds, "duration_s": duration, "protocol": protocol, "envoy_concurrency": 2},
        "notes": [
            "direct = the client talks to Triton itself; gateway = `sonic-gateway serve` with auth on "
            "(dev-issuer token, cached after the first call): Envoy 1.40 on the public port (2 worker "
            "threads), the Python control plane on loopback, no rate limits (so inference takes Envoy's "
            "fast path); envoy = the same Envoy binary with a static config (one LEAST_REQUEST cluster, "
            "64 MiB HTTP/2 windows and buffers like the gateway's, 2 worker threads, no auth); haproxy = "
            "HAProxy 2.6, `mode http`, "
            + ("`proto h2`, " if protocol == "grpc" else "HTTP/1.1, ")
            + "`balance leastconn`, no auth.",
            "proxy CPU = utime+stime of the proxy's whole process tree from /proc over the measured "
            "requests (warm-up calls pro rata): for the gateway, the Python process AND its Envoy child; "
            "'of which Envoy' is the Envoy child alone (the rest is Python: token verdicts, the "
            "usage log read into usage records, health and queue probes). Per GB counts request "
            "tensor bytes.",
            "Envoy fast path = the share of the gateway arm's requests (warm-up included) that Envoy sent "
            "straight to Triton (its per-model clusters' upstream_rq_total); the rest went through Python.",
            f"identity_fp32 arms: {rounds} interleaved round(s) of {duration:g} s each; "
            "emtrack_michel: one round.",
            "ratios are within this run; the machine is shared, absolute numbers are noisy.",
        ],
    }
    return result, PROXY_COLUMNS


def overhead(ctx: Context) -> tuple[dict[str, Any], Columns]:
    result, columns = _overhead(ctx, "grpc")
    _ratio_plot(ctx, result)
    return result, columns


def http(ctx: Context) -> tuple[dict[str, Any], Columns]:
    result, columns = _overhead(ctx, "http")
    _ratio_plot(ctx, result)
    return result, columns


def _ratio_plot(ctx: Context, result: dict[str, Any]) -> None:
    rows = [r for r in result["rows"] if r["arm"] != "direct"]
    labels = sorted(
        {f"{r['model'].split('_')[0]} b{r['batch']} c{r['concurrency']}" for r in rows},
        key=lambda s: (s.split()[0], int(s.split()[1][1:]), s.split()[2]),
    )
    groups: dict[str, list[float]] = {}
    for arm in ("gateway", PLAIN_ENVOY, "haproxy"):
        by = {
            f"{r['model'].split('_')[0]} b{r['batch']} c{r['concurrency']}": r["throughput_ratio"]
            for r in rows
            if r["arm"] == arm
        }
        groups[arm] = [by.get(label, 0.0) for label in labels]
    bar_plot(
        ctx.outdir / f"{result['scenario']}.png",
        labels,
        groups,
        ylabel="throughput / direct",
        title=result["title"],
        hline=1.0,
    )


# -- 2: auth cost ------------------------------------------------------------------------------------


def auth(ctx: Context) -> tuple[dict[str, Any], Columns]:
    with Processes(ctx.workdir) as procs, LoadPool(4) as pool:
        log("starting Triton (identity_fp32) and two gateways (auth on, auth off)")
        (triton,) = procs.tritons([DEFAULT_MODEL_REPOSITORY], ["identity_fp32"])
        on = procs.gateway([triton], auth=True, workers=ctx.workers, name="gateway-auth")
        off = procs.gateway([triton], auth=False, workers=ctx.workers, name="gateway-noauth")
        # Its own process for the uncached arm: thousands of cache entries must not weigh on the
        # cached arm's process (both trust the same dev-issuer key directory).
        fresh = procs.gateway([triton], auth=True, workers=ctx.workers, name="gateway-auth-uncached")
        duration = 2.0 if ctx.quick else 3.0
        n_tokens = 3000 if ctx.quick else 6000
        log(f"minting {n_tokens} distinct tokens for the uncached arm")
        t0 = time.perf_counter()
        tokens = tuple(on.tokens(n_tokens))
        log(f"   minted in {time.perf_counter() - t0:.1f} s")
        arms = [
            gateway_arm("auth off", off, off.grpc_port, ()),
            gateway_arm("auth on, cached token", on, on.grpc_port, (tokens[0],)),
            gateway_arm("auth on, new token per request", fresh, fresh.grpc_port, tokens[1:]),
        ]
        for arm in [*arms[:2], replace(arms[2], tokens=tokens[:1])]:
            wait_servable(arm.url, "identity_fp32", arm.tokens[0] if arm.tokens else None)
        base = LoadSpec(url="", model="", batch=1)
        configs = _configs(IDENTITY, [1, 1693], [1, 4], duration)
        # Six rounds: on this shared 2-core VM one 3 s arm swings by +-15 %, so three rounds could not
        # resolve a 5 % goal (two suite runs read an 18-22 % "loss" at batch 1 that six rounds did not).
        rounds = 2 if ctx.quick else 6

        def fresh_tokens(arm: Arm, r: int, cfg_index: int) -> Arm:
            if len(arm.tokens) <= 1:
                return arm
            per = len(tokens[1:]) // (rounds * len(configs))  # a fresh slice each time: never a cache hit
            i = r * len(configs) + cfg_index
            return replace(arm, tokens=tokens[1 + i * per : 1 + (i + 1) * per])

        samples = interleaved(pool, arms, configs, base, rounds, "auth", fresh_tokens)
        rows = []
        for cfg in configs:
            for arm in arms:
                rows.append(
                    {
                        "batch": cfg["batch"],
                        "concurrency": cfg["concurrency"],
                        "arm": arm.name,
                        **samples[(cfg["key"], arm.name)].summary(),
                    }
                )
        compare(rows, ("batch", "concurrency"), baseline_arm="auth off")
        check_us = cached_check_us(on.key_dir)
        log(f"cached token check in-process: {check_us:.1f} us of CPU per request")
    goals = []
    for b in (1, 1693):
        for c in (1, 4):
            cached = _row(rows, batch=b, concurrency=c, arm="auth on, cached token")
            goals.append(
                goal(
                    f"batch {b} c{c}: throughput loss with a cached token <= 5% (load test, median of "
                    "per-round ratios)",
                    1.0 - cached["round_ratio_median"],
                    0.05,
                    at_most=True,
                )
            )
    columns: Columns = [
        ("batch", "batch"),
        ("concurrency", "conc"),
        ("arm", "arm"),
        ("requests", "requests"),
        ("throughput_rps", "req/s"),
        ("throughput_ratio", "ratio to auth off"),
        ("round_ratio_median", "per-round ratio, median"),
        ("round_ratio_range", "per-round range"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("added_p50_ms", "added p50 ms"),
        ("proxy_cpu_ms_per_req", "gateway CPU ms/req"),
        ("envoy_cpu_ms_per_req", "of which Envoy"),
        ("fast_path_share", "Envoy fast path"),
        ("errors", "errors"),
    ]
    result = {
        "scenario": "auth",
        "title": "cost of authentication in the gateway (gRPC, identity_fp32)",
        "command": ctx.command,
        "rows": rows,
        "goals": goals,
        "params": {
            "duration_s": duration,
            "rounds": rounds,
            "tokens": n_tokens,
            "cached_check_us": check_us,
        },
        "notes": [
            "Three gateways (each Envoy + Python) on the same Triton: one with `auth.enabled: false`, two "
            "validating dev-issuer ES256 tokens (the same code path as real issuers), one per auth arm.",
            "With a cached token the check is Envoy's: the policy filter's per-token verdict table (Python "
            "is asked once per token and Envoy worker). The uncached arm sends a different freshly minted "
            "token on every request: each costs Python one /internal/verify call (a full validation by "
            "gateway/auth). Its request count is capped by the number of tokens minted.",
            "Arms run back to back in each round, in rotated order; the goal reads the median over rounds of "
            "each round's own ratio (cached arm / auth off), which the machine's drift between rounds "
            "does not bias. 'per-round range' shows how far single rounds strayed.",
            f"Python's own cached check (authenticate + authorize on a cached token, timed in-process over "
            f"20,000 calls: {check_us:.1f} us) now runs only on the slow path (requests Envoy cannot "
            "decide), so it is reported, not set against the fast path's CPU.",
        ],
    }
    _auth_plot(ctx, rows)
    return result, columns


def _auth_plot(ctx: Context, rows: list[dict[str, Any]]) -> None:
    labels = sorted({f"b{r['batch']} c{r['concurrency']}" for r in rows})
    groups: dict[str, list[float]] = {}
    for arm in ("auth on, cached token", "auth on, new token per request"):
        by = {f"b{r['batch']} c{r['concurrency']}": r["throughput_ratio"] for r in rows if r["arm"] == arm}
        groups[arm] = [by.get(label, 0.0) for label in labels]
    bar_plot(
        ctx.outdir / "auth.png",
        labels,
        groups,
        ylabel="throughput / auth off",
        title="authentication cost",
        hline=1.0,
    )


# -- 4: the paper's scale-out curve -------------------------------------------------------------------


def scaleout(ctx: Context) -> tuple[dict[str, Any], Columns]:
    # Emulated GPU: the delay model without dynamic batching, one execution per request.
    delay_ms, delay_us = 2.0, 80.0
    scale = 20  # events are 55,000 / scale patches so that a point takes seconds, not minutes
    patches = PAPER_PATCHES_PER_EVENT // scale
    target_saturation = 8.0
    # Points per batch size: what 16 client processes on a shared 2-core machine can do in minutes.
    points = (
        {1693: [1, 4, 8, 12, 16]}
        if ctx.quick
        else {1693: [1, 2, 4, 6, 8, 10, 12, 16], 235: [1, 4, 8, 12, 16]}
    )
    clients = sorted({n for ns in points.values() for n in ns})
    batches = list(points)
    events = 3
    rows: list[dict[str, Any]] = []
    models: dict[int, LatencyModel] = {}
    with Processes(ctx.workdir) as procs:
        repo = delay_repo(ctx.workdir, "scaleout-repo", delay_ms=delay_ms, delay_us_per_item=delay_us)
        log(
            f"starting one emulated GPU (delay_fp32: {delay_ms:g} ms + {delay_us:g} us/patch, "
            "no dynamic batching) and the gateway"
        )
        (triton,) = procs.tritons([repo], ["delay_fp32"])
        gw = procs.gateway([triton], auth=True, workers=ctx.workers)
        token = gw.tokens(1)[0]
        arms = [Arm("direct", triton.grpc_address), Arm("gateway", f"127.0.0.1:{gw.grpc_port}", (token,))]
        for arm in arms:
            wait_servable(arm.url, "delay_fp32", arm.tokens[0] if arm.tokens else None)
        log(f"spawning {max(clients)} emulated reconstruction clients")
        with LoadPool(max(clients)) as pool:
            for batch in batches:
                t_gpu = gpu_time(patches, batch, delay_ms / 1e3, delay_us / 1e6)
                # t_latency (transmit + travel) is calibrated from one lone event per arm; the CPU term
                # is then chosen so that Eq. 3 puts saturation at target_saturation clients.
                # t_GPU is the emulated GPU's busy time per event as Triton itself reports it (the
                # nominal delay plus Triton's and the Python backend's own per-request work, all of
                # it serialised on the one instance), measured from a lone client; t_latency
                # (transmit + travel) is the rest of that lone event. Both arms calibrate; the larger
                # latency is kept.
                latency, busy = 0.0, []
                for arm in arms:
                    spec = LoadSpec(
                        url=arm.url,
                        model="delay_fp32",
                        batch=batch,
                        tokens=arm.tokens,
                        events=3,
                        warmup=0,  # Triton's busy time below is then exactly three events'
                        cpu_s=0.0,
                        patches_per_event=patches,
                        duration_s=60,
                    )
                    before = busy_seconds(triton.grpc_address, "delay_fp32")
                    run = pool.run(spec, 1)
                    busy.append((busy_seconds(triton.grpc_address, "delay_fp32") - before) / 3)
                    latency = max(latency, min(run.workers[0].event_times) - max(t_gpu, busy[-1]))
                nominal, t_gpu = t_gpu, max(t_gpu, min(busy))
                latency = max(latency, 0.0)
                cpu = cpu_for_saturation(target_saturation, t_gpu, latency)
                model = LatencyModel(cpu_other=cpu, gpu=t_gpu, latency=latency)
                models[batch] = model
                log(
                    f"batch {batch}: t_GPU {t_gpu:.3f} s (nominal {nominal:.3f} s), "
                    f"t_latency {latency:.3f} s, (1-p) t_CPU {cpu:.3f} s "
                    f"-> Eq. 3 saturation at {model.saturation_clients:.1f} clients"
                )
                for n in points[batch]:
                    for arm in arms:
                        spec = LoadSpec(
                            url=arm.url,
                            model="delay_fp32",
                            batch=batch,
                            tokens=arm.tokens,
                            events=events,
                            cpu_s=cpu,
                            patches_per_event=patches,
                            duration_s=events * model.per_event(n) * 3 + 30,
                        )
                        cpu0 = tree_cpu_seconds(gw.proc.pid)
                        run = pool.run(spec, n)
                        gw_cpu = tree_cpu_seconds(gw.proc.pid) - cpu0
                        # The first event of each client starts in lockstep with the others: skip it.
                        times = [t for w in run.workers for t in w.event_times[1:]]
                        per_event = sum(times) / len(times) if times else float("nan")
                        rows.append(
                            {
                                "batch": batch,
                                "clients": n,
                                "arm": arm.name,
                                "events": len(times),
                                "per_event_s": per_event,
                                "eq4_s": model.per_event(n),
                                "deviation": per_event / model.per_event(n) - 1.0,
                                "inferences_per_s": patches * len(times) / sum(times) * n
                                if times
                                else float("nan"),
                                "gateway_cpu_s": gw_cpu if arm.name == "gateway" else None,
                                "errors": run.errors,
                            }
                        )
                        log(
                            f"scaleout batch {batch} N={n} {arm.name}: {per_event:.3f} s/event "
                            f"(Eq. 4: {model.per_event(n):.3f} s)"
                        )
    _scaleout_plot(ctx, rows, models, clients)
    goals = []
    for batch, model in models.items():
        n_sat = model.saturation_clients
        for name in ("direct", "gateway"):
            mine = [r for r in rows if r["batch"] == batch and r["arm"] == name]
            below = [r for r in mine if r["clients"] < n_sat]
            above = [r for r in mine if r["clients"] > n_sat]
            if below:
                flat = max(abs(r["deviation"]) for r in below)
                goals.append(
                    goal(
                        f"batch {batch} {name}: below saturation, max deviation from Eq. 4 <= 20%",
                        flat,
                        0.2,
                        at_most=True,
                    )
                )
            if above:
                worst = max(abs(r["deviation"]) for r in above)
                goals.append(
                    goal(
                        f"batch {batch} {name}: above saturation, max deviation from Eq. 4 <= 20%",
                        worst,
                        0.2,
                        at_most=True,
                    )
                )
    columns: Columns = [
        ("batch", "batch"),
        ("clients", "N clients"),
        ("arm", "arm"),
        ("events", "events"),
        ("per_event_s", "s/event"),
        ("eq4_s", "Eq. 4 s/event"),
        ("deviation", "deviation"),
        ("inferences_per_s", "inferences/s"),
        ("gateway_cpu_s", "gateway CPU s"),
        ("errors", "errors"),
    ]
    paper = paper_model()
    result = {
        "scenario": "scaleout",
        "title": "the paper's scale-out curve (Eq. 4), one emulated GPU",
        "command": ctx.command,
        "rows": rows,
        "goals": goals,
        "params": {
            "delay_ms": delay_ms,
            "delay_us_per_item": delay_us,
            "patches_per_event": patches,
            "time_scale": scale,
            "clients": clients,
            "events_per_client": events,
            "models": {str(b): m.as_dict() for b, m in models.items()},
            "paper_model": paper.as_dict(),
        },
        "notes": [
            f"Events are scaled down {scale}x to {patches} patches (48x48 float32, the real request sizes: "
            "batches of 1693 or 235 patches, the last one smaller), so a point takes seconds.",
            f"The emulated GPU is `delay_fp32` with {delay_ms:g} ms per call + {delay_us:g} us per patch and "
            "dynamic batching off (the paper's Fig. 7 left): one request at a time, like one GPU.",
            "Each client is a separate process: per event it spends (1-p) t_CPU, then sends the event's "
            "batches one after the other (blocking, as LArSoft does). The CPU part is a sleep: a 2-core "
            "machine cannot give 16 clients a core each, and in the paper each client had its own core.",
            f"The CPU term is scaled down (paper: {paper.cpu_other:.0f} s of {paper.ideal:.0f} s, "
            f"saturation at {paper.saturation_clients:.0f} clients per GPU) so that Eq. 3 puts saturation at "
            f"{target_saturation:g} clients, within what this machine can run (N <= {max(clients)}).",
            "t_GPU is the emulated GPU's busy time per event as Triton's statistics report it for a lone "
            "client (the nominal delay plus Triton's and the Python backend's per-request work, serialised "
            "on the one instance: this is what makes batch 235 saturate earlier, as in the paper); "
            "t_latency is the rest of that lone event (the larger of direct and gateway). The Eq. 4 "
            "column for N > 1 is a prediction from these two calibrations and the chosen CPU term.",
            "The first event of each client is dropped (all clients start in lockstep).",
        ],
    }
    return result, columns


def busy_seconds(url: str, model: str) -> float:
    """Seconds ``model`` has spent executing on the Triton at ``url`` (input + infer + output)."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)
    finally:
        client.close()
    total = 0
    for entry in stats.get("model_stats", []):
        inference = entry.get("inference_stats", {})
        for phase in ("compute_input", "compute_infer", "compute_output"):
            total += int(inference.get(phase, {}).get("ns", 0))
    return total / 1e9


def _scaleout_plot(
    ctx: Context, rows: list[dict[str, Any]], models: dict[int, LatencyModel], clients: list[int]
) -> None:
    series: list[dict[str, Any]] = []
    fine = list(range(1, max(clients) + 1))
    for batch, model in models.items():
        for arm, style in (("direct", "o-"), ("gateway", "s--")):
            pts = [r for r in rows if r["batch"] == batch and r["arm"] == arm]
            series.append(
                {
                    "label": f"{arm}, batch {batch}",
                    "x": [r["clients"] for r in pts],
                    "y": [r["per_event_s"] for r in pts],
                    "style": style,
                }
            )
        series.append(
            {
                "label": f"Eq. 4, batch {batch} (saturation {model.saturation_clients:.1f})",
                "x": fine,
                "y": model.curve(fine),
                "style": ":",
            }
        )
    plot(
        ctx.outdir / "scaleout.png",
        series,
        xlabel="simultaneous clients N",
        ylabel="time per event [s]",
        title="per-event time vs clients, one emulated GPU",
    )


# -- 5: gzip on the client->gateway hop ------------------------------------------------------------------


def gzip(ctx: Context) -> tuple[dict[str, Any], Columns]:
    batches = [235, 1693]
    rows: list[dict[str, Any]] = []
    with Processes(ctx.workdir) as procs, LoadPool(1) as pool:
        log("starting Triton (identity_fp32) and the gateway")
        (triton,) = procs.tritons([DEFAULT_MODEL_REPOSITORY], ["identity_fp32"])
        gw = procs.gateway([triton], auth=True, workers=ctx.workers)
        token = gw.tokens(1)[0]
        arm = gateway_arm("gateway", gw, gw.grpc_port, (token,))
        wait_servable(arm.url, "identity_fp32", token)
        duration = 3.0 if ctx.quick else 5.0
        client_pid = pool.pids[0]
        for batch in batches:
            data = make_patches(batch, "protodune")
            raw = data.tobytes()
            nonzero = float((data != 0).mean())
            sizes = {lvl: len(zlib.compress(raw, lvl)) for lvl in (1, 6)}
            for compression in (None, "gzip"):
                spec = LoadSpec(
                    url=arm.url,
                    model="identity_fp32",
                    batch=batch,
                    data="protodune",
                    compression=compression,
                    duration_s=duration,
                    tokens=(token,),
                )
                sample = Sample()
                c0 = tree_cpu_seconds(client_pid)
                try:
                    measure(pool, arm, spec, 1, sample)
                except RuntimeError as exc:  # the gateway refused it: say so in the table, go on
                    reason = str(exc).strip().splitlines()[-1][:200]
                    rows.append({"batch": batch, "compression": compression or "none", "refused": reason})
                    log(f"gzip batch {batch} {compression or 'none'}: REFUSED by the gateway: {reason}")
                    continue
                client_cpu = tree_cpu_seconds(client_pid) - c0
                s = sample.summary()
                n = s["requests"] + spec.warmup
                rows.append(
                    {
                        "batch": batch,
                        "compression": compression or "none",
                        "mb_per_request": len(raw) / 1e6,
                        "nonzero_pixels": nonzero,
                        "wire_mb_per_request": (sizes[6] if compression else len(raw)) / 1e6,
                        "zlib1_ratio": len(raw) / sizes[1],
                        "zlib6_ratio": len(raw) / sizes[6],
                        "client_cpu_ms_per_req": client_cpu / n * 1e3,
                        **s,
                    }
                )
                log(
                    f"gzip batch {batch} {compression or 'none'}: {s['p50_ms']:.1f} ms p50, "
                    f"gateway {s.get('proxy_cpu_ms_per_req', 0):.1f} ms CPU/req, "
                    f"client {client_cpu / n * 1e3:.1f} ms"
                )
    analysis = []
    for batch in batches:
        off = _row(rows, batch=batch, compression="none")
        on = _row(rows, batch=batch, compression="gzip")
        if "refused" in on or "refused" in off:
            continue
        extra_cpu_s = (
            (on["client_cpu_ms_per_req"] - off["client_cpu_ms_per_req"])
            + (on["proxy_cpu_ms_per_req"] - off["proxy_cpu_ms_per_req"])
        ) / 1e3
        saved = (off["wire_mb_per_request"] - on["wire_mb_per_request"]) * 1e6
        on["bytes_saved_fraction"] = saved / (off["wire_mb_per_request"] * 1e6)
        on["extra_cpu_ms_per_mb"] = extra_cpu_s * 1e3 / off["mb_per_request"]
        on["extra_p50_ms"] = on["p50_ms"] - off["p50_ms"]
        # Break-even: gzip pays when sending the saved bytes would take longer than the extra work.
        on["break_even_gbit_s"] = saved * 8 / 1e9 / extra_cpu_s if extra_cpu_s > 0 else float("inf")
        on["break_even_latency_gbit_s"] = (
            saved * 8 / 1e9 / (on["extra_p50_ms"] / 1e3) if on["extra_p50_ms"] > 0 else float("inf")
        )
        analysis.append(on)
    columns: Columns = [
        ("batch", "batch"),
        ("compression", "compression"),
        ("nonzero_pixels", "non-zero pixels"),
        ("mb_per_request", "MB/request"),
        ("wire_mb_per_request", "MB on the wire"),
        ("zlib1_ratio", "zlib-1 ratio"),
        ("p50_ms", "p50 ms"),
        ("extra_p50_ms", "extra p50 ms"),
        ("client_cpu_ms_per_req", "client CPU ms/req"),
        ("proxy_cpu_ms_per_req", "gateway CPU ms/req"),
        ("fast_path_share", "Envoy fast path"),
        ("extra_cpu_ms_per_mb", "extra CPU ms/MB"),
        ("break_even_gbit_s", "pays below Gbit/s (CPU)"),
        ("break_even_latency_gbit_s", "pays below Gbit/s (latency)"),
        ("refused", "refused"),
    ]
    result = {
        "scenario": "gzip",
        "title": "gzip on the client->gateway hop, realistic sparse patches",
        "command": ctx.command,
        "rows": rows,
        "params": {
            "duration_s": duration,
            "data": "sonic_client.protodune events -> find_hits -> extract_patches",
        },
        "notes": [
            "Patches come from the client's synthetic ProtoDUNE events (hits found, 48x48 patches cut), "
            "the same data path as a reconstruction job.",
            "MB on the wire for gzip is zlib level 6 of the tensor bytes (what gRPC's gzip produces, "
            "within a few bytes of framing); it is computed, not sniffed from the loopback interface.",
            "refused = the gateway answered every compressed request with this error: no measurement.",
            "Extra CPU = client CPU (compression) + gateway CPU (decompression by grpc-core) per request, "
            "both from /proc. 'Pays below X Gbit/s (CPU)': on a link slower than X the bytes saved take "
            "longer to send than the extra CPU costs; the latency variant uses the extra p50 instead.",
        ],
    }
    return result, columns


# -- 6: routing over unequal backends ------------------------------------------------------------------


def routing(ctx: Context) -> tuple[dict[str, Any], Columns]:
    base_ms = 10.0
    factors = [1, 2, 4]
    batch = 8
    concurrency = 12
    duration = 4.0 if ctx.quick else 6.0
    with Processes(ctx.workdir) as procs, LoadPool(concurrency) as pool:
        repos = [
            delay_repo(
                ctx.workdir,
                f"routing-{f}x",
                delay_ms=base_ms * f,
                delay_us_per_item=0.0,
                model_name="delay_route",
            )
            for f in factors
        ]
        log(f"starting three Tritons with delay_route at {', '.join(f'{base_ms * f:g} ms' for f in factors)}")
        tritons = procs.tritons(repos, ["delay_route"], name="routing-triton")
        gw = procs.gateway(tritons, auth=True, workers=ctx.workers)
        token = gw.tokens(1)[0]
        rr_port, lc_port, p2c_port, full_port = free_port(), free_port(), free_port(), free_port()
        servers = tuple(t.grpc_address for t in tritons)
        ha = procs.haproxy(
            [
                Frontend("rr", rr_port, "grpc", "roundrobin", servers),
                Frontend("lc", lc_port, "grpc", "leastconn", servers),
            ]
        )
        env = procs.envoy(
            [
                EnvoyFrontend("p2c", p2c_port, "grpc", servers),
                EnvoyFrontend("full", full_port, "grpc", servers, choice_count=100),
            ]
        )
        arms = [
            gateway_arm("gateway", gw, gw.grpc_port, (token,)),
            Arm("envoy least_request (2 choices)", f"127.0.0.1:{p2c_port}", (), env.proc.pid),
            Arm("envoy least_request (all hosts)", f"127.0.0.1:{full_port}", (), env.proc.pid),
            Arm("haproxy roundrobin", f"127.0.0.1:{rr_port}", (), ha.pid),
            Arm("haproxy leastconn", f"127.0.0.1:{lc_port}", (), ha.pid),
        ]
        spec = LoadSpec(url="", model="delay_route", batch=batch, duration_s=duration)
        for arm in arms:
            wait_servable(arm.url, "delay_route", arm.tokens[0] if arm.tokens else None)
        rows: list[dict[str, Any]] = []
        standalone = 0.0
        for f, t in zip(factors, tritons, strict=True):
            sample = Sample()
            measure(pool, Arm(f"standalone {f}x", t.grpc_address), spec, 4, sample)
            s = sample.summary()
            standalone += s["throughput_rps"]
            rows.append({"arm": f"standalone {base_ms * f:g} ms backend", **s})
            log(f"routing standalone {f}x: {s['throughput_rps']:.1f} req/s")
        for arm in arms:
            sample = Sample()
            measure(pool, arm, spec, concurrency, sample)
            s = sample.summary()
            rows.append({"arm": arm.name, **s, "fraction_of_sum": s["throughput_rps"] / standalone})
            log(
                f"routing {arm.name}: {s['throughput_rps']:.1f} req/s = "
                f"{s['throughput_rps'] / standalone:.2f} "
                f"of the sum, p99 {s['p99_ms']:.0f} ms"
            )
    gw_row = _row(rows, arm="gateway")
    lc = _row(rows, arm="haproxy leastconn")
    goals = [
        goal(
            "gateway throughput >= 0.9 of the sum of standalone throughputs", gw_row["fraction_of_sum"], 0.9
        ),
        goal(
            "gateway throughput fraction minus HAProxy leastconn's >= 0",
            gw_row["fraction_of_sum"] - lc["fraction_of_sum"],
            0.0,
        ),
        goal(
            "gateway p99 over HAProxy leastconn's p99 <= 1",
            gw_row["p99_ms"] / lc["p99_ms"],
            1.0,
            at_most=True,
        ),
    ]
    bar_plot(
        ctx.outdir / "routing.png",
        [r["arm"] for r in rows if "fraction_of_sum" in r],
        {"fraction of the sum": [r["fraction_of_sum"] for r in rows if "fraction_of_sum" in r]},
        ylabel="throughput / sum of standalone",
        title="three unequal backends (1x, 2x, 4x)",
        hline=0.9,
    )
    columns: Columns = [
        ("arm", "arm"),
        ("requests", "requests"),
        ("throughput_rps", "req/s"),
        ("fraction_of_sum", "fraction of sum"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("proxy_cpu_ms_per_req", "proxy CPU ms/req"),
        ("fast_path_share", "Envoy fast path"),
        ("errors", "errors"),
    ]
    result = {
        "scenario": "routing",
        "title": "routing over three backends of unequal speed",
        "command": ctx.command,
        "rows": rows,
        "goals": goals,
        "params": {
            "delays_ms": [base_ms * f for f in factors],
            "batch": batch,
            "concurrency": concurrency,
            "duration_s": duration,
        },
        "notes": [
            f"Three Tritons, each serving `delay_route` (a copy of delay_fp32: {base_ms:g}/{2 * base_ms:g}/"
            f"{4 * base_ms:g} ms per inference, dynamic batching off, one instance), batch {batch}.",
            "Standalone: each backend alone, direct, 4 requests in flight (always busy). Combined arms: "
            f"{concurrency} requests in flight through the gateway (auth on; Envoy's per-model "
            "LEAST_REQUEST cluster with choice_count 100, i.e. every host, endpoint weights from capacity "
            "(all 1) and Triton's queue), plain Envoy LEAST_REQUEST with its default two random choices "
            "and with choice_count 100, HAProxy roundrobin and HAProxy leastconn.",
            "The two plain-Envoy arms share one Envoy process, the two HAProxy arms one HAProxy: their "
            "CPU per request is the process's over each arm's own interval.",
        ],
    }
    return result, columns


# -- 7: control-plane scale -----------------------------------------------------------------------------


def controlplane(ctx: Context) -> tuple[dict[str, Any], Columns]:
    from benchmarks import controlplane as cp

    with Processes(ctx.workdir) as procs, LoadPool(4) as pool:
        log("starting Triton (identity_fp32); then one Envoy per catalog size, fed by the control-plane code")
        (triton,) = procs.tritons([DEFAULT_MODEL_REPOSITORY], ["identity_fp32"])
        result = cp.run(procs, pool, ctx.workdir, ctx.outdir, triton, quick=ctx.quick, command=ctx.command)
    return result, list(cp.COLUMNS)


def envoycost(ctx: Context) -> tuple[dict[str, Any], Columns]:
    from benchmarks import envoycost as ec

    return ec.run(ctx.workdir, ctx.outdir, quick=ctx.quick, command=ctx.command), list(ec.COLUMNS)


def filterchain(ctx: Context) -> tuple[dict[str, Any], Columns]:
    from benchmarks import filterchain as fc

    result = fc.run(
        ctx.workdir, ctx.outdir, quick=ctx.quick, command=ctx.command, variant_env=ctx.variant_env
    )
    return result, list(fc.COLUMNS)


SCENARIOS = {
    "overhead": overhead,
    "auth": auth,
    "http": http,
    "scaleout": scaleout,
    "gzip": gzip,
    "routing": routing,
    "controlplane": controlplane,
    "envoycost": envoycost,
    "filterchain": filterchain,
}
