"""The policy filter's own CPU: one Envoy answering every request itself, h2load as the client.

The end-to-end scenarios measure the gateway through real clients and a real Triton on two shared
cores, where one run's noise (+-15 %) is larger than any single filter's cost. Here nothing but the
filter chain differs between arms: the same Envoy process (one worker thread), listeners that answer
200 themselves (no upstream), and h2load (nghttp2's C load generator, Debian package
``nghttp2-client``) posting the same ModelInfer message over 4 connections x 4 streams. Arms:

1. ``no filter`` - Envoy's HTTP/2 codec and router alone;
2. ``empty Lua filter`` - a Lua filter whose ``envoy_on_request`` does nothing (Lua's own floor);
3. ``gateway's filters`` - the HTTP filters of the gateway's public gRPC listener exactly as
   rendered with auth off (today the Lua policy filter alone): it strips the marks, buffers and reads
   the message (model, version, batch, tensor parameters), then takes its slow-path branch (this
   route has no per-model rules);
4. ``gateway's filters (variant)``, with ``--variant-env``: the same chain as other code renders it
   (e.g. ``PYTHONPATH=/tmp/base``, an older checkout's ``gateway`` package), for an A/B of a change.

Batch 1 (9.3 KB: read from one copy) and batch 64 (590 KB: walked in Envoy's buffer).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from benchmarks.envoy import EnvoyFrontend
from benchmarks.procs import Processes, free_port, log, tree_cpu_seconds
from benchmarks.report import bar_plot

H2LOAD = "h2load"
INFER_PATH = "/inference.GRPCInferenceService/ModelInfer"

COLUMNS = [
    ("batch", "batch"),
    ("arm", "arm"),
    ("requests", "requests"),
    ("cpu_us_per_req", "Envoy CPU us/req (median)"),
    ("cpu_us_range", "range over rounds"),
    ("step_us", "over no filter"),
    ("errors", "non-2xx"),
]


def infer_frame(batch: int) -> bytes:
    """One length-prefixed ModelInfer message as tritonclient sends it (identity_fp32, zeros)."""
    request = service_pb2.ModelInferRequest(model_name="identity_fp32")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[batch, 48, 48, 1])
    request.outputs.add(name="OUTPUT0")
    request.raw_input_contents.append(np.zeros((batch, 48, 48, 1), np.float32).tobytes())
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _lua(name: str, source: str) -> dict[str, Any]:
    return {
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": source},
        },
    }


# Run in a subprocess, from a scratch directory, so that a variant's PYTHONPATH decides which
# gateway package renders the chain (the repository root would come first on sys.path otherwise).
_RENDER_CHAIN = """
import json
from gateway.envoy.render import render_bootstrap
from gateway.envoy.view import Addresses, StaticView
port = ("127.0.0.1", 1)
static = StaticView(addresses=Addresses(port, port, port, port, port), auth_enabled=False)
(grpc,) = [x for x in render_bootstrap(static)["static_resources"]["listeners"] if x["name"] == "public_grpc"]
chain = grpc["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
print(json.dumps([f for f in chain if f["name"] != "envoy.filters.http.router"]))
"""


def gateway_chain(workdir: Path, env: dict[str, str] | None = None) -> tuple[dict[str, Any], ...]:
    """The HTTP filters of the gateway's public gRPC listener (auth off), router excluded, as the
    gateway package found with ``env`` renders them."""
    out = subprocess.run(
        [sys.executable, "-c", _RENDER_CHAIN],
        env={**os.environ, **(env or {})},
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    chain: list[dict[str, Any]] = json.loads(out.stdout)
    return tuple(chain)


def _h2load(port: int, body: Path, requests: int) -> tuple[int, str]:
    """(non-2xx answers, h2load's summary line)."""
    out = subprocess.run(
        [
            H2LOAD, "-n", str(requests), "-c", "4", "-m", "4", "-d", str(body),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            f"http://127.0.0.1:{port}{INFER_PATH}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    codes = next((line for line in out.stdout.splitlines() if line.startswith("status codes:")), "")
    ok = int(codes.split()[2]) if codes else 0
    return requests - ok, codes


def run(
    workdir: Path, outdir: Path, *, quick: bool, command: str, variant_env: dict[str, str] | None = None
) -> dict[str, Any]:
    if shutil.which(H2LOAD) is None:
        raise RuntimeError("the filterchain scenario needs h2load: apt-get install nghttp2-client")
    arms: dict[str, tuple[dict[str, Any], ...]] = {
        "no filter": (),
        "empty Lua filter": (_lua("empty", "function envoy_on_request(handle) end"),),
        "gateway's filters": gateway_chain(workdir),
    }
    if variant_env:
        arms["gateway's filters (variant)"] = gateway_chain(workdir, variant_env)
    rounds, requests = (3, 5000) if quick else (7, 20000)
    ports = {name: free_port() for name in arms}
    frontends = [
        EnvoyFrontend(f"arm{i}", ports[name], "grpc", ("127.0.0.1:9",), filters=f, answer_directly=True)
        for i, (name, f) in enumerate(arms.items())
    ]
    rows: list[dict[str, Any]] = []
    with Processes(workdir) as procs:
        log("starting one Envoy (1 worker) answering directly behind each filter chain")
        envoy = procs.envoy(frontends, name="envoy-filterchain", concurrency=1)
        for batch in (1, 64):
            body = workdir / f"infer-b{batch}.bin"
            body.write_bytes(infer_frame(batch))
            n = requests if batch == 1 else requests // 4
            samples: dict[str, list[float]] = {name: [] for name in arms}
            errors = dict.fromkeys(arms, 0)
            names = list(arms)
            for r in range(rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    before = tree_cpu_seconds(envoy.proc.pid)
                    bad, summary = _h2load(ports[name], body, n)
                    samples[name].append((tree_cpu_seconds(envoy.proc.pid) - before) / n * 1e6)
                    errors[name] += bad
                    cost = samples[name][-1]
                    log(f"filterchain b{batch} round {r + 1} {name}: {cost:.1f} us/req ({summary})")
            base = statistics.median(samples["no filter"])
            for name in arms:
                cpu = statistics.median(samples[name])
                rows.append(
                    {
                        "batch": batch,
                        "arm": name,
                        "requests": n * rounds,
                        "cpu_us_per_req": cpu,
                        "cpu_us_range": f"{min(samples[name]):.0f}-{max(samples[name]):.0f}",
                        "step_us": cpu - base,
                        "errors": errors[name],
                    }
                )
    bar_plot(
        outdir / "filterchain.png",
        list(arms),
        {f"batch {b}": [r["cpu_us_per_req"] for r in rows if r["batch"] == b] for b in (1, 64)},
        ylabel="Envoy CPU per request (us)",
        title="the policy filter's own cost (Envoy answering directly, h2load)",
    )
    return {
        "scenario": "filterchain",
        "title": "the policy filter's own CPU per request (one Envoy answering directly, h2load)",
        "command": command,
        "rows": rows,
        "params": {"rounds": rounds, "requests_per_round": requests, "h2load": "-c 4 -m 4"},
        "notes": [
            "One Envoy process with one worker thread; each arm is a listener whose route answers 200 "
            "itself, so the arms differ only in their HTTP filters. CPU is the Envoy process's "
            "utime+stime over each h2load run (clock ticks of 10 ms: ~0.5 us/request resolution at "
            "batch 1), median over interleaved rounds.",
            "gateway's filters = the public gRPC listener's HTTP filters from gateway/envoy/render.py, "
            "auth off, router excluded; on this route the policy filter reads the whole message and "
            "then takes its fall-back branch (no per-model rules here), so the fast-path branch's few "
            "metadata writes are not included.",
        ],
    }
