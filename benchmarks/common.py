"""Pieces every scenario uses: an arm (a target plus the process whose CPU is metered) and measuring it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.load import LoadPool, LoadSpec
from benchmarks.procs import admin_stats, log, tree_cpu_seconds
from benchmarks.report import Sample

IDENTITY = {"model": "identity_fp32", "input_name": "INPUT0", "outputs": ("OUTPUT0",)}
EMTRACK = {
    "model": "emtrack_michel",
    "input_name": "main_input",
    "outputs": ("em_trk_none_netout", "michel_netout"),
}


@dataclass(frozen=True)
class Arm:
    name: str
    url: str  # host:port
    tokens: tuple[str, ...] = ()
    proxy_pid: int | None = None  # process tree whose CPU is charged to this arm (None: direct)
    envoy_pid: int | None = None  # the gateway's Envoy (a child of proxy_pid): its part is reported too
    admin: str = ""  # the gateway's Envoy admin host:port: which path served is counted from its stats


def fast_requests(admin: str) -> int:
    """Requests the gateway's Envoy has sent to per-model clusters (the fast path) so far."""
    stats = admin_stats(admin, r"^cluster\.(grpc|http)-.*\.upstream_rq_total$")
    return sum(stats.values())


def measure(pool: LoadPool, arm: Arm, spec: LoadSpec, concurrency: int, sample: Sample) -> None:
    """Run ``spec`` against ``arm`` and add the outcome (and the proxy's CPU) to ``sample``."""
    spec = replace(spec, url=arm.url, tokens=spec.tokens or arm.tokens)
    fast0 = fast_requests(arm.admin) if arm.admin else None
    env0 = tree_cpu_seconds(arm.envoy_pid) if arm.envoy_pid else None
    cpu0 = tree_cpu_seconds(arm.proxy_pid) if arm.proxy_pid else None
    run = pool.run(spec, concurrency)
    cpu = tree_cpu_seconds(arm.proxy_pid) - cpu0 if arm.proxy_pid and cpu0 is not None else None
    env = tree_cpu_seconds(arm.envoy_pid) - env0 if arm.envoy_pid and env0 is not None else None
    fast = fast_requests(arm.admin) - fast0 if arm.admin and fast0 is not None else None
    # The proxy also served the warm-up calls: charge its CPU per request over all of them.
    warm = spec.warmup * concurrency
    measured = len(run.latencies)
    share = measured / (measured + warm) if measured + warm else 1.0
    if cpu is not None:
        cpu *= share
    if env is not None:
        env *= share
    sample.add(
        run.latencies,
        run.elapsed,
        sum(w.request_bytes for w in run.workers),
        cpu,
        run.errors,
        run.first_error,
        envoy_cpu_s=env,
        fast_requests=fast,
        sent_requests=measured + warm,  # run.errors counts failed load processes, not requests
    )
    if run.errors:
        log(f"   ! {arm.name}: {run.errors} failed load processes: {run.first_error}")


def wait_servable(
    url: str,
    model: str,
    token: str | None,
    input_name: str = "INPUT0",
    protocol: str = "grpc",
    timeout_s: float = 60.0,
) -> None:
    """Block until one batch-1 request through ``url`` succeeds (backends healthy behind proxies)."""
    import numpy as np

    deadline = time.monotonic() + timeout_s
    headers = {"authorization": f"Bearer {token}"} if token else None
    last: Exception | None = None
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    client: Any = tc.InferenceServerClient(url)
    try:
        inp = tc.InferInput(input_name, [1, 48, 48, 1], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 48, 48, 1), np.float32))
        while time.monotonic() < deadline:
            try:
                client.infer(model, [inp], headers=headers)
                return
            except Exception as exc:  # not ready yet: health checks have not marked it up
                last = exc
                time.sleep(0.3)
    finally:
        client.close()
    raise RuntimeError(f"{model} is not servable through {url} after {timeout_s:.0f} s: {last}")


def interleaved(
    pool: LoadPool,
    arms: list[Arm],
    configs: list[dict[str, Any]],
    base: LoadSpec,
    rounds: int,
    label: str,
    arm_for: Callable[[Arm, int, int], Arm] | None = None,
) -> dict[tuple[str, str], Sample]:
    """Every config on every arm, arms back to back per config, the whole set ``rounds`` times.

    Keyed by (config key, arm name). Interleaving spreads the machine's noise over all arms alike.
    ``arm_for(arm, round, config index)`` may vary an arm per measurement (e.g. fresh tokens).
    """
    samples: dict[tuple[str, str], Sample] = {}
    total = len(configs) * len(arms) * rounds
    done = 0
    for r in range(rounds):
        for cfg in configs:
            spec = replace(base, **{k: v for k, v in cfg.items() if k not in ("key", "concurrency")})
            # Rotate the arm order each round: no arm always runs first (or right after another).
            for arm in arms[r % len(arms) :] + arms[: r % len(arms)]:
                if arm_for is not None:
                    arm = arm_for(arm, r, configs.index(cfg))
                done += 1
                sample = samples.setdefault((cfg["key"], arm.name), Sample())
                measure(pool, arm, spec, cfg["concurrency"], sample)
                s = sample.summary()
                log(
                    f"{label} [{done}/{total}] round {r + 1} {cfg['key']} {arm.name}: "
                    f"{s['throughput_rps']:.1f} req/s, p50 {s['p50_ms']:.2f} ms"
                )
    return samples
