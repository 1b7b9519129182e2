"""``serve --workers 2``: two real worker processes, one merged view of their metrics on the metrics port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.triton.launcher import TritonServer
from tests.observability.support import value
from tests.support.net import free_port

pytestmark = pytest.mark.triton

N = 16
BODY = {"inputs": [{"name": "INPUT0", "shape": [1, 48, 48, 1], "datatype": "FP32", "data": [0.5] * 2304}]}


def _access_lines(log: Path) -> list[dict[str, object]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["logger"] == "gateway.access":
                out.append(entry)
    return out


def _wait_for_workers(proc: subprocess.Popen[bytes], log: Path, workers: int) -> None:
    deadline = time.monotonic() + 60
    while log.read_text().count("gateway listening") < workers:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_two_workers_merge_their_metrics(tritons: list[TritonServer], tmp_path: Path) -> None:
    http_port, metrics_port = free_port(), free_port()
    backends = ", ".join(
        f"{{facility: f{i}, grpc: '{t.grpc_address}', http: '127.0.0.1:{t.ports.http}'}}"
        for i, t in enumerate(tritons)
    )
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"listen: {{grpc: '127.0.0.1:{free_port()}', http: '127.0.0.1:{http_port}', "
        f"metrics: '127.0.0.1:{metrics_port}'}}\n"
        f"database_url: 'sqlite:///{tmp_path / 'catalog.db'}'\n"
        f"backends: [{backends}]\n"
        "auth: {enabled: false}\n"
    )
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    log = tmp_path / "gateway.log"
    env = {**os.environ, "TMPDIR": str(scratch)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("SONIC_GATEWAY_LISTEN__METRICS", None)  # the config file names the metrics port
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,  # a file, not a terminal: JSON lines
            env=env,
        )
    try:
        _wait_for_workers(proc, log, 2)
        (metrics_dir,) = scratch.glob("sonic-gateway-metrics-*")
        url = f"http://127.0.0.1:{http_port}"
        # No keep-alive: each request on a new connection, which the kernel spreads over the workers.
        with httpx.Client(base_url=url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            for _ in range(N):
                assert client.post("/v2/models/identity_fp32/infer", json=BODY).status_code == 200
            lines = _access_lines(log)
            assert len(lines) == N
            assert len({e["pid"] for e in lines}) == 2, "both workers should have served requests"
            scrapes = [client.get(f"http://127.0.0.1:{metrics_port}/metrics").text for _ in range(4)]
        for text in scrapes:  # the metrics port reports every worker's counts
            labels = {"frontend": "http", "model": "identity_fp32"}
            assert value(text, "sonic_gateway_requests_total", **labels, outcome="ok") == N
            assert value(text, "sonic_gateway_inferences_total", **labels) == N
            assert value(text, "sonic_gateway_overhead_seconds_count", **labels) == N
            assert value(text, "sonic_gateway_in_flight_requests", frontend="http") == 0
            assert value(text, "sonic_gateway_backend_healthy") == 2
        assert len({p.name.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")}) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not metrics_dir.exists(), "the parent removes the metrics directory when it exits"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
