"""Control-plane scale: F facilities x M models pushed to a real Envoy by the gateway's own code.

The catalog is simulated: F fake backends (TEST-NET addresses nothing listens on; Envoy never
connects to them because no request is routed there) each serve M - 1 fake models, and one real
Triton serves ``identity_fp32``. The gateway's control-plane code does the rest, unchanged:
:func:`gateway.envoy.controlplane.build_view` turns the registry snapshot into a view,
:class:`gateway.envoy.ads.AdsServer` serves it over Envoy's ADS stream, and Envoy is started with
:func:`gateway.envoy.render.render_bootstrap` and :class:`gateway.envoy.supervisor.EnvoyProcess`'s
command line. What is measured per catalog size:

- a change reaching Envoy: from the start of ``build_view`` + ``publish`` until Envoy's admin stats
  show it applied (one endpoint's weight; a new model with its clusters and routes; a facility drained
  from every model);
- Envoy's memory (RSS from /proc, and tcmalloc's allocated bytes from admin ``/memory``) and the
  push size (``PushStats.bytes_changed``, every resource of a full publish);
- the data path's CPU per request at batch 1 through the real model, whose routes are the LAST in
  Envoy's route table (fake names sort before it): the worst place for a linear route match.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import IDENTITY, Arm, interleaved, wait_servable
from benchmarks.load import LoadPool, LoadSpec
from benchmarks.procs import Processes, admin_get, admin_stats, free_port, log, rss_bytes, wait_envoy_ready
from benchmarks.report import goal, plot
from gateway.envoy.ads import AdsPublisher, AdsServer, PushStats
from gateway.envoy.ads import register as register_ads
from gateway.envoy.binary import envoy_binary
from gateway.envoy.controlplane import build_view
from gateway.envoy.render import grpc_cluster, http_cluster, render_bootstrap
from gateway.envoy.supervisor import EnvoyProcess
from gateway.envoy.view import Addresses, DataPlaneView, ModelView, StaticView
from gateway.routing.backend import Backend, BackendHealth
from gateway.routing.registry import Snapshot
from gateway.triton.launcher import TritonServer

REAL_MODEL = "identity_fp32"
FULL_SIZES = [(1, 1), (10, 20), (50, 20), (25, 100), (50, 200)]
QUICK_SIZES = [(1, 1), (10, 20), (25, 100)]


# -- a simulated catalog ---------------------------------------------------------------------------


def fake_model(j: int) -> str:
    # "bench-..." sorts before "identity_fp32": the real model's routes come last in the table.
    return f"bench-model-{j:04d}"


def fake_backend(i: int) -> Backend:
    host = f"192.0.2.{i % 250 + 1}"  # TEST-NET-1: never routed to, never connected to
    return Backend(
        id=f"facility-{i:02d}/{host}:{10000 + i}",
        facility=f"facility-{i:02d}",
        grpc_address=f"{host}:{10000 + i}",
        http_address=f"{host}:{20000 + i}",
        capacity=1.0,
    )


@dataclass
class Catalog:
    """F fake facilities (one backend each) serving M - 1 fake models, plus the real Triton."""

    facilities: int
    models: int
    real: Backend
    weights: dict[str, float] = field(default_factory=dict)  # backend id -> capacity override
    drained: set[str] = field(default_factory=set)
    extra_models: int = 0

    def model_names(self) -> list[str]:
        return [fake_model(j) for j in range(self.models - 1 + self.extra_models)]

    def snapshot(self) -> Snapshot:
        fakes = [fake_backend(i) for i in range(self.facilities if self.models > 1 else 0)]
        fakes = [
            Backend(b.id, b.facility, b.grpc_address, b.http_address, capacity=self.weights.get(b.id, 1.0))
            for b in fakes
        ]
        names = self.model_names()
        backends = {b.id: b for b in [self.real, *fakes]}
        health = {
            b.id: BackendHealth(healthy=True, models={n: frozenset({"1"}) for n in names}) for b in fakes
        }
        health[self.real.id] = BackendHealth(healthy=True, models={REAL_MODEL: frozenset({"1"})})
        live = tuple(b.id for b in fakes if b.id not in self.drained)
        serving = {name: live for name in names if live}
        serving[REAL_MODEL] = (self.real.id,)
        return Snapshot(backends=backends, health=health, serving=serving)

    def view(self) -> DataPlaneView:
        return build_view(self.snapshot(), pending=lambda _backend: {}, model_groups=lambda _model: None)


def model_view(view: DataPlaneView, name: str) -> ModelView:
    for model in view.models:
        if model.name == name:
            return model
    raise KeyError(name)


# -- the ADS server (what the control plane would be) ---------------------------------------------


class ControlPlaneStub:
    """What an Envoy talks to on its control port, as the gateway's would be: the ADS server with
    that catalog's resources (the gateway's own code). Usage lines go to /dev/null (StaticView's
    default): Envoy formats and writes them as the gateway's does, no one reads them.

    gRPC asyncio servers on a loop in a background thread; one server per Envoy (sizes run side by
    side, each with its own catalog)."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="control-plane", daemon=True)
        self._thread.start()
        self._servers: list[Any] = []

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def serve(self) -> tuple[int, AdsServer]:
        import grpc

        async def start() -> tuple[int, AdsServer]:
            server = grpc.aio.server()
            ads = AdsServer()
            register_ads(server, ads)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            self._servers.append(server)
            return port, ads

        result: tuple[int, AdsServer] = self._run(start())
        return result

    def publish(self, publisher: AdsPublisher, view: DataPlaneView) -> PushStats:
        """Publish on the servers' loop (the streams' wake-ups live there)."""

        async def go() -> PushStats:
            return publisher.publish(view)

        stats: PushStats = self._run(go())
        return stats

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                await server.stop(1)

        self._run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextlib.contextmanager
def control_plane() -> Iterator[ControlPlaneStub]:
    stub = ControlPlaneStub()
    try:
        yield stub
    finally:
        stub.close()


# -- one Envoy per catalog size --------------------------------------------------------------------


class EnvoyDied(Exception):
    pass


@dataclass
class SizedEnvoy:
    facilities: int
    models: int
    catalog: Catalog
    plane: ControlPlaneStub
    publisher: AdsPublisher
    static: StaticView
    proc: subprocess.Popen[bytes]
    admin: str
    grpc_port: int
    endpoints: int  # endpoints across all clusters (both protocols)
    view: DataPlaneView
    row: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.facilities}x{self.models}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        """Stop this Envoy now (its inotify instances are a per-user budget the next size needs)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _stats(admin: str, regex: str) -> dict[str, int]:
    return admin_stats(admin, regex)


def _wait(what: str, check: Callable[[], bool], timeout_s: float, poll_s: float = 0.02) -> float:
    """Seconds until ``check()`` holds (polled every ``poll_s``); raises after ``timeout_s``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return time.perf_counter() - t0
        time.sleep(poll_s)
    raise RuntimeError(f"{what}: not seen in Envoy within {timeout_s:.0f} s")


def _memory(envoy: SizedEnvoy) -> dict[str, float]:
    mem = json.loads(admin_get(envoy.admin, "/memory"))
    return {
        "rss_mb": rss_bytes(envoy.pid) / 1e6,
        "allocated_mb": int(mem.get("allocated", 0)) / 1e6,
        "heap_mb": int(mem.get("heap_size", 0)) / 1e6,
    }


def _envoy_failure(log_path: Path) -> str:
    """The line that says why Envoy stopped (its first critical one), from its log."""
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if "][critical][" in line:
                return line.split("] ", 2)[-1][:300]
    return "no critical line in its log"


def start_sized(
    procs: Processes, workdir: Path, facilities: int, models: int, real: Backend, plane: ControlPlaneStub
) -> SizedEnvoy:
    """Publish the catalog, start an Envoy on it, wait until every cluster is loaded.

    If Envoy dies while loading, the returned entry has ``error`` set (and pid 0): the row still
    carries what the control plane produced (push size and time).
    """
    catalog = Catalog(facilities, models, real)
    label = f"{facilities}x{models}"
    root = workdir / f"cp-{label}"
    root.mkdir(parents=True, exist_ok=True)
    grpc_port, http_port, admin_port = free_port(), free_port(), free_port()
    control_port, ads = plane.serve()
    static = StaticView(
        addresses=Addresses(
            public_grpc=("127.0.0.1", grpc_port),
            public_http=("127.0.0.1", http_port),
            admin=("127.0.0.1", admin_port),
            control_grpc=("127.0.0.1", control_port),  # ADS
            control_http=("127.0.0.1", free_port()),  # nothing needs it with auth off
        ),
        auth_enabled=False,
    )
    publisher = AdsPublisher(static, ads)
    t0 = time.perf_counter()
    view = catalog.view()
    build_s = time.perf_counter() - t0
    push = plane.publish(publisher, view)
    publish_s = time.perf_counter() - t0 - build_s
    clusters = sum(1 for m in view.models for eps in (m.grpc, m.http) if eps)
    endpoints = sum(len(m.grpc) + len(m.http) for m in view.models)
    row: dict[str, Any] = {
        "size": label,
        "facilities": facilities,
        "models": models,
        "clusters": clusters,
        "endpoints": endpoints,
        "full_push_bytes": push.bytes_changed,
        "full_push_resources": push.resources_changed,
        "full_build_s": build_s,
        "full_publish_s": publish_s,
    }
    bootstrap = root / "bootstrap.json"
    bootstrap.write_text(json.dumps(render_bootstrap(static), indent=1))
    command = EnvoyProcess(envoy_binary(), bootstrap, root, concurrency=2).command()
    t_start = time.perf_counter()
    proc = procs.popen(command, f"envoy-{label}")
    admin = f"127.0.0.1:{admin_port}"
    envoy = SizedEnvoy(
        facilities, models, catalog, plane, publisher, static, proc, admin, grpc_port, endpoints, view, row
    )
    real_cluster = grpc_cluster(model_view(view, REAL_MODEL))

    def loaded() -> bool:
        if proc.poll() is not None:
            raise EnvoyDied(f"envoy exited with code {proc.returncode}")
        s = _stats(admin, r"^cluster_manager\.(active|warming)_clusters$")
        member = _stats(admin, rf"^cluster\.{real_cluster}\.membership_total$")
        return (
            s.get("cluster_manager.active_clusters", 0) >= clusters
            and s.get("cluster_manager.warming_clusters", 1) == 0
            and member.get(f"cluster.{real_cluster}.membership_total", 0) == 1
        )

    try:
        wait_envoy_ready(admin, 120, proc)
        _wait(f"{label}: all {clusters} clusters", loaded, 120, 0.05)
    except (RuntimeError, EnvoyDied) as exc:
        time.sleep(0.5)  # let its last lines reach the log
        envoy.error = f"{exc}: {_envoy_failure(procs.workdir / f'envoy-{label}.log')}"
        row["error"] = envoy.error
        log(f"controlplane {label}: Envoy did not load the catalog: {envoy.error}")
        envoy.stop()
        return envoy
    row["startup_s"] = time.perf_counter() - t_start
    row.update(_memory(envoy))
    log(
        f"controlplane {label}: {clusters} clusters, {endpoints} endpoints, push "
        f"{push.bytes_changed / 1e6:.2f} MB in {push.resources_changed} resources, Envoy ready+loaded in "
        f"{row['startup_s']:.1f} s, RSS {row['rss_mb']:.0f} MB"
    )
    return envoy


def _push(envoy: SizedEnvoy, change: Callable[[Catalog], None]) -> tuple[float, PushStats, DataPlaneView]:
    """Apply ``change`` to the catalog, then build and publish as the control plane does."""
    change(envoy.catalog)
    t0 = time.perf_counter()
    view = envoy.catalog.view()
    stats = envoy.plane.publish(envoy.publisher, view)
    envoy.view = view
    return t0, stats, view


def measure_changes(envoy: SizedEnvoy, timeout_s: float) -> None:
    """Three kinds of change, each timed from build_view until Envoy shows it."""
    row = envoy.row
    admin = envoy.admin
    if envoy.models < 2:  # the 1x1 reference has nothing to change
        return
    first = model_view(envoy.view, fake_model(0))
    cluster = grpc_cluster(first)
    target = fake_backend(0)

    # 1. One backend's capacity (its endpoint weight in every model's cluster): its endpoint sets only.
    before = _stats(admin, rf"^cluster\.{cluster}\.update_success$").get(
        f"cluster.{cluster}.update_success", 0
    )
    t0, stats, _ = _push(envoy, lambda c: c.weights.__setitem__(target.id, 3.0))
    key = f"cluster.{cluster}.update_success"

    def weight_seen() -> bool:
        return _stats(admin, rf"^cluster\.{cluster}\.update_success$").get(key, 0) > before

    _wait("capacity change", weight_seen, timeout_s)
    row.update(
        weight_reach_s=time.perf_counter() - t0,
        weight_push_bytes=stats.bytes_changed,
        weight_resources=stats.resources_changed,
    )

    # 2. A new model served by every facility: a cluster per protocol (CDS), endpoints (EDS), routes (RDS).
    rds_key = "http.public_grpc.rds.sonic_grpc.update_success"
    rds_before = _stats(admin, r"^http\.public_grpc\.rds\.sonic_grpc\.update_success$").get(rds_key, 0)

    def add_model(c: Catalog) -> None:
        c.extra_models += 1

    t0, stats, view = _push(envoy, add_model)
    new_cluster = grpc_cluster(model_view(view, fake_model(envoy.models - 1)))
    member_key = f"cluster.{new_cluster}.membership_total"

    def model_seen() -> bool:
        member = _stats(admin, rf"^cluster\.{new_cluster}\.membership_total$").get(member_key, 0)
        routes = _stats(admin, r"^http\.public_grpc\.rds\.sonic_grpc\.update_success$").get(rds_key, 0)
        return member == envoy.facilities and routes > rds_before

    _wait("new model", model_seen, timeout_s)
    row.update(
        model_reach_s=time.perf_counter() - t0,
        model_push_bytes=stats.bytes_changed,
        model_resources=stats.resources_changed,
    )

    # 3. A facility drained: its endpoint leaves every model's clusters (2 x models endpoint sets).
    t0, stats, view = _push(envoy, lambda c: c.drained.add(target.id))
    fake_clusters = {
        f"cluster.{name}.membership_total"
        for m in view.models
        if m.name != REAL_MODEL
        for name in (grpc_cluster(m), http_cluster(m))
    }

    def drained_seen() -> bool:
        s = _stats(admin, r"^cluster\.(grpc|http)-.*\.membership_total$")
        return all(s.get(k, -1) == envoy.facilities - 1 for k in fake_clusters)

    _wait("facility drained", drained_seen, timeout_s, 0.05)
    row.update(
        drain_reach_s=time.perf_counter() - t0,
        drain_push_bytes=stats.bytes_changed,
        drain_resources=stats.resources_changed,
    )
    row.update({f"after_{k}": v for k, v in _memory(envoy).items() if k == "rss_mb"})
    log(
        f"controlplane {envoy.label}: capacity change seen in {row['weight_reach_s']:.2f} s, new model in "
        f"{row['model_reach_s']:.2f} s, facility drained in {row['drain_reach_s']:.2f} s"
    )


def _slope(xs: list[float], ys: list[float]) -> float:
    """Growth exponent between the last two points (1 = linear, < 1 sublinear)."""
    import math

    if len(xs) < 2 or min(xs[-2:]) <= 0 or min(ys[-2:]) <= 0 or xs[-1] == xs[-2]:
        return math.nan
    return math.log(ys[-1] / ys[-2]) / math.log(xs[-1] / xs[-2])


def run(
    procs: Processes,
    pool: LoadPool,
    workdir: Path,
    outdir: Path,
    triton: TritonServer,
    *,
    quick: bool,
    command: str,
) -> dict[str, Any]:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    real = Backend(
        id=f"real/{triton.grpc_address}",
        facility="real",
        grpc_address=triton.grpc_address,
        http_address=f"127.0.0.1:{triton.ports.http}",
    )
    duration = 2.0 if quick else 3.0
    rounds = 2 if quick else 3
    key = "identity_fp32/b1/c4"
    cfg: dict[str, Any] = {**IDENTITY, "batch": 1, "concurrency": 4, "duration_s": duration, "key": key}
    base = LoadSpec(url="", model="", batch=1)
    with control_plane() as plane:
        # The 1x1 Envoy (the real model alone) stays up: each larger size's data path is measured in
        # the same rounds as it, so the ratio is free of the machine's drift between sizes.
        ref = start_sized(procs, workdir, 1, 1, real, plane)
        if ref.error:
            raise RuntimeError(f"Envoy does not even run the 1x1 catalog: {ref.error}")
        ref_arm = Arm("envoy 1x1", f"127.0.0.1:{ref.grpc_port}", (), ref.pid)
        direct = Arm("direct", triton.grpc_address)
        wait_servable(direct.url, REAL_MODEL, None)
        wait_servable(ref_arm.url, REAL_MODEL, None)
        ref_cpu: list[float] = []
        rows = [ref.row]
        for f, m in sizes[1:]:
            envoy = start_sized(procs, workdir, f, m, real, plane)
            rows.append(envoy.row)
            if envoy.error:
                continue
            try:
                measure_changes(envoy, timeout_s=30.0)
                real_cluster = grpc_cluster(model_view(envoy.view, REAL_MODEL))
                arm = Arm(f"envoy {envoy.label}", f"127.0.0.1:{envoy.grpc_port}", (), envoy.pid)
                wait_servable(arm.url, REAL_MODEL, None)
                samples = interleaved(
                    pool, [direct, ref_arm, arm], [cfg], base, rounds, f"controlplane {envoy.label}"
                )
                d = samples[(key, "direct")].summary()
                r = samples[(key, ref_arm.name)].summary()
                s = samples[(key, arm.name)].summary()
                ref_cpu.append(r["proxy_cpu_ms_per_req"])
                envoy.row.update(
                    cpu_ms_per_req=s.get("proxy_cpu_ms_per_req"),
                    ref_cpu_ms_per_req=r.get("proxy_cpu_ms_per_req"),
                    cpu_ratio_to_1x1=s["proxy_cpu_ms_per_req"] / r["proxy_cpu_ms_per_req"],
                    throughput_ratio=s["throughput_rps"] / d["throughput_rps"],
                    added_p50_ms=s["p50_ms"] - d["p50_ms"],
                    ref_added_p50_ms=r["p50_ms"] - d["p50_ms"],
                    fast_requests=sum(
                        _stats(envoy.admin, rf"^cluster\.{real_cluster}\.upstream_rq_total$").values()
                    ),
                    errors=s["errors"],
                )
            except (RuntimeError, EnvoyDied, OSError) as exc:
                envoy.row["error"] = f"{exc}: {_envoy_failure(procs.workdir / f'envoy-{envoy.label}.log')}"
                log(f"controlplane {envoy.label}: {envoy.row['error']}")
            finally:
                envoy.stop()
        if ref_cpu:
            ref.row["cpu_ms_per_req"] = statistics.median(ref_cpu)
            ref.row["cpu_ratio_to_1x1"] = 1.0
        ref.stop()
    goals = _goals(rows, sizes)
    _plot(outdir, rows)
    return {
        "scenario": "controlplane",
        "title": "control-plane scale: facilities x models pushed to one Envoy",
        "command": command,
        "rows": rows,
        "goals": goals,
        "params": {"sizes": [f"{f}x{m}" for f, m in sizes], "rounds": rounds, "duration_s": duration},
        "notes": NOTES,
    }


def _goals(rows: list[dict[str, Any]], sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    goals = []
    ran = [r for r in rows if "error" not in r]
    biggest = f"{sizes[-1][0]}x{sizes[-1][1]}"
    goals.append(
        goal(f"Envoy loads and serves every size up to {biggest}", float(len(ran) == len(rows)), 1.0)
    )
    changed = [r for r in ran if "drain_reach_s" in r]
    for kind in ("weight", "model", "drain"):
        if changed:
            worst = max(r[f"{kind}_reach_s"] for r in changed)
            label = f"{_KIND[kind]} reaches Envoy in < 2 s (slowest size that ran, {len(changed)} sizes)"
            goals.append(goal(label, worst, 2.0, at_most=True))
    multi = [r for r in rows if r["models"] > 1]
    pushes = [(float(r["endpoints"]), float(r["full_push_bytes"])) for r in multi]
    goals.append(
        goal(
            "push size grows no worse than linearly: exponent between the two largest sizes <= 1.1",
            _slope([x for x, _ in pushes], [y for _, y in pushes]),
            1.1,
            at_most=True,
        )
    )
    loaded = [r for r in multi if "rss_mb" in r]
    for key, what in (("rss_mb", "Envoy RSS"), ("allocated_mb", "Envoy allocated")):
        if len(loaded) >= 2:
            goals.append(
                goal(
                    f"{what} grows no worse than linearly: exponent between the two largest sizes that ran "
                    "<= 1.1",
                    _slope([float(r["endpoints"]) for r in loaded], [float(r[key]) for r in loaded]),
                    1.1,
                    at_most=True,
                )
            )
    timed = [r for r in multi if r.get("cpu_ratio_to_1x1")]
    if timed:
        goals.append(
            goal(
                f"data path CPU/req at batch 1, {timed[-1]['size']} over 1x1 in the same rounds <= 1.15 "
                "(A/A noise: 5-10 %)",
                timed[-1]["cpu_ratio_to_1x1"],
                1.15,
                at_most=True,
            )
        )
    return goals


NOTES = [
    "FxM: F facilities (one fake backend each, TEST-NET addresses that nothing listens on and Envoy "
    "never connects to) each serving M - 1 fake models, plus one real Triton serving identity_fp32. "
    "1x1 is the real model alone: the data path's reference, kept running while each larger size runs.",
    "The gateway's own control-plane code builds and publishes every view (build_view -> AdsPublisher "
    "-> its ADS stream); Envoy runs with render_bootstrap's config and EnvoyProcess's command line, "
    "2 worker threads, auth off (token checks do not depend on the catalog), usage lines "
    "written to /dev/null. One size's Envoy at a time (plus the 1x1 reference).",
    "Reach = from the start of build_view until Envoy's admin stats show the change applied "
    "(cluster update_success for a capacity change; the new cluster's membership and the gRPC "
    "route table's update_success for a new model; every model cluster's membership for a "
    "drained facility). The gateway's sync loop adds up to envoy.sync_interval_s (0.25 s) before "
    "build_view starts.",
    "Push = serialized bytes of the resources that changed (what the ADS stream carries); a full "
    "push carries every resource.",
    "Memory: RSS from /proc after the initial load, tcmalloc 'allocated' from admin /memory. "
    "Growth exponent: log(y2/y1)/log(x2/x1) in endpoints between the two largest sizes.",
    "Data path: batch 1, 4 clients, identity_fp32 through the size's Envoy and the 1x1 Envoy, with "
    "direct, in interleaved rounds; its routes are the last in the route table (the worst place "
    "for Envoy's linear route match). CPU = the Envoy process's utime+stime per request.",
    "An 'error' is Envoy's own reason for stopping, from its log.",
]

_KIND = {"weight": "a backend's capacity change", "model": "a new model", "drain": "a drained facility"}

COLUMNS = [
    ("size", "F x M"),
    ("clusters", "clusters"),
    ("endpoints", "endpoints"),
    ("full_push_bytes", "full push bytes"),
    ("full_publish_s", "build+publish s"),
    ("startup_s", "Envoy start+load s"),
    ("rss_mb", "Envoy RSS MB"),
    ("allocated_mb", "Envoy allocated MB"),
    ("weight_reach_s", "capacity change s"),
    ("model_reach_s", "new model s"),
    ("model_push_bytes", "new model push bytes"),
    ("drain_reach_s", "drained facility s"),
    ("drain_push_bytes", "drain push bytes"),
    ("cpu_ms_per_req", "data path CPU ms/req (b1 c4)"),
    ("cpu_ratio_to_1x1", "CPU over 1x1's"),
    ("throughput_ratio", "ratio to direct"),
    ("added_p50_ms", "added p50 ms"),
    ("errors", "errors"),
    ("error", "Envoy failed"),
]


def _plot(outdir: Path, rows: list[dict[str, Any]]) -> None:
    def series(key: str, label: str, scale: float = 1.0, style: str = "o-") -> dict[str, Any]:
        pts = [(r["endpoints"], r[key] * scale) for r in rows if r.get(key) is not None]
        return {"label": label, "x": [x for x, _ in pts], "y": [y for _, y in pts], "style": style}

    plot(
        outdir / "controlplane.png",
        [
            series("rss_mb", "Envoy RSS [MB]"),
            series("allocated_mb", "Envoy allocated [MB]"),
            series("full_push_bytes", "full push [MB]", 1e-6),
            series("cpu_ms_per_req", "data path CPU [ms/req x 100]", 100.0, "s--"),
        ],
        xlabel="endpoints (facilities x models x 2 protocols)",
        ylabel="MB  /  ms x 100",
        title="Envoy memory, push size and per-request CPU vs catalog size",
    )
