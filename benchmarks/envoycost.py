"""Where the gateway's per-request CPU goes: plain Envoy, then the gateway's pieces added one by one.

Arms, in the same interleaved rounds, all on one Triton:

1. ``envoy`` - plain Envoy (benchmarks/envoy.py), the peer of the overhead scenario;
2. ``envoy + policy filter`` - the same with the gateway's Lua policy filter as rendered, auth off
   (it buffers each ModelInfer and reads model name, version, batch and tensor parameters from it;
   on plain Envoy's single route its per-model rules are absent, so it only reads);
3. ``gateway's Envoy, auth off`` - the Envoy config the control plane renders (the policy filter,
   per-model routes, retries, outlier detection, usage lines to /dev/null), auth off,
   published by the gateway's own code for the real model alone: Envoy without Python;
4. ``gateway (Envoy + Python), auth on`` - ``sonic-gateway serve``: adds the per-token verdict
   and the Python control plane (reading the usage log = usage records, health, queues).

The differences between neighbours are what each piece costs per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.common import IDENTITY, Arm, interleaved, wait_servable
from benchmarks.envoy import EnvoyFrontend
from benchmarks.load import LoadPool, LoadSpec
from benchmarks.procs import Processes, free_port, log
from benchmarks.report import bar_plot, compare
from gateway.envoy.render import POLICY_FILTER, render_bootstrap
from gateway.envoy.view import Addresses, StaticView
from gateway.routing.backend import Backend
from gateway.triton.launcher import DEFAULT_MODEL_REPOSITORY


def gateway_filter(name: str) -> dict[str, Any]:
    """One HTTP filter exactly as the gateway renders it for its public gRPC listener."""
    port = ("127.0.0.1", 1)
    static = StaticView(
        addresses=Addresses(port, port, port, port, port),
        auth_enabled=False,
    )
    (listener,) = [
        x for x in render_bootstrap(static)["static_resources"]["listeners"] if x["name"] == "public_grpc"
    ]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for entry in hcm["http_filters"]:
        if entry["name"] == name:
            found: dict[str, Any] = entry
            return found
    raise KeyError(f"the gateway's gRPC listener has no filter {name!r}")


COLUMNS = [
    ("batch", "batch"),
    ("concurrency", "conc"),
    ("arm", "arm"),
    ("requests", "requests"),
    ("throughput_ratio", "ratio to direct"),
    ("p50_ms", "p50 ms"),
    ("added_p50_ms", "added p50 ms"),
    ("proxy_cpu_ms_per_req", "CPU ms/req"),
    ("envoy_cpu_ms_per_req", "of which Envoy"),
    ("python_cpu_ms_per_req", "of which Python"),
    ("step_cpu_ms_per_req", "step CPU ms/req"),
    ("fast_path_share", "Envoy fast path"),
    ("errors", "errors"),
]


def run(workdir: Path, outdir: Path, *, quick: bool, command: str) -> dict[str, Any]:
    from benchmarks import controlplane as cp

    with Processes(workdir) as procs, LoadPool(4) as pool, cp.control_plane() as plane:
        log(
            "starting Triton (identity_fp32), plain Envoy, Envoy + policy filter, the gateway's Envoy, "
            "the gateway"
        )
        (triton,) = procs.tritons([DEFAULT_MODEL_REPOSITORY], ["identity_fp32"])
        plain_port, fe_port = free_port(), free_port()
        servers = (triton.grpc_address,)
        env = procs.envoy(
            [
                EnvoyFrontend("plain", plain_port, "grpc", servers),
                EnvoyFrontend("policy", fe_port, "grpc", servers, filters=(gateway_filter(POLICY_FILTER),)),
            ]
        )
        real = Backend(
            id=f"real/{triton.grpc_address}",
            facility="real",
            grpc_address=triton.grpc_address,
            http_address=f"127.0.0.1:{triton.ports.http}",
        )
        gw_envoy = cp.start_sized(procs, workdir, 1, 1, real, plane)
        if gw_envoy.error:
            raise RuntimeError(f"the gateway's Envoy config did not load: {gw_envoy.error}")
        gw = procs.gateway([triton], auth=True)
        token = gw.tokens(1)[0]
        arms = [
            Arm("direct", triton.grpc_address),
            Arm("envoy", f"127.0.0.1:{plain_port}", (), env.proc.pid),
            Arm("envoy + policy filter", f"127.0.0.1:{fe_port}", (), env.proc.pid),
            Arm("gateway's Envoy, auth off", f"127.0.0.1:{gw_envoy.grpc_port}", (), gw_envoy.pid),
            Arm(
                "gateway (Envoy + Python), auth on",
                f"127.0.0.1:{gw.grpc_port}",
                (token,),
                gw.proc.pid,
                gw.envoy_pid,
                gw.admin,
            ),
        ]
        for arm in arms:
            wait_servable(arm.url, "identity_fp32", arm.tokens[0] if arm.tokens else None)
        duration = 2.0 if quick else 3.0
        rounds = 1 if quick else 3
        configs: list[dict[str, Any]] = [
            {
                **IDENTITY,
                "batch": b,
                "concurrency": 4,
                "duration_s": duration,
                "key": f"identity_fp32/b{b}/c4",
            }
            for b in (1, 1693)
        ]
        samples = interleaved(pool, arms, configs, LoadSpec(url="", model="", batch=1), rounds, "envoycost")
    rows = []
    for cfg in configs:
        previous: float | None = None
        for arm in arms:
            row = {
                "batch": cfg["batch"],
                "concurrency": 4,
                "arm": arm.name,
                **samples[(cfg["key"], arm.name)].summary(),
            }
            cpu = row.get("proxy_cpu_ms_per_req")
            if cpu is not None:
                row["step_cpu_ms_per_req"] = cpu - previous if previous is not None else cpu
                previous = cpu
            rows.append(row)
    compare(rows, ("batch", "concurrency"))
    labels = [a.name for a in arms[1:]]
    bar_plot(
        outdir / "envoycost.png",
        labels,
        {
            f"batch {b}": [
                next(r["proxy_cpu_ms_per_req"] for r in rows if r["batch"] == b and r["arm"] == name)
                / next(r["proxy_cpu_ms_per_req"] for r in rows if r["batch"] == b and r["arm"] == "envoy")
                for name in labels
            ]
            for b in (1, 1693)
        },
        ylabel="CPU per request / plain Envoy's",
        title="the gateway's per-request CPU, piece by piece (4 clients)",
        hline=1.5,
    )
    return {
        "scenario": "envoycost",
        "title": "where the gateway's per-request CPU goes (gRPC, identity_fp32, 4 clients)",
        "command": command,
        "rows": rows,
        "params": {"rounds": rounds, "duration_s": duration},
        "notes": [
            "Each arm adds pieces to the one above it; 'step' is its CPU per request minus the previous "
            "arm's. envoy + policy filter uses the Lua filter exactly as gateway/envoy/render.py "
            "renders it (auth off). gateway's Envoy, auth off = render_bootstrap + the ADS server for the "
            "real model alone (policy filter, per-model routes, usage lines written to /dev/null), "
            "no Python process. The last arm is `sonic-gateway serve` with auth on: it adds "
            "the Lua verdict table and Python (usage records from the usage log, "
            "health and queue probes, the 0.25 s sync loop).",
            "All Envoys run 2 worker threads. CPU is each process tree's utime+stime per request; the two "
            "plain arms share one Envoy process, charged over each arm's own interval.",
        ],
    }
