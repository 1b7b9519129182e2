"""``sonic-gateway serve`` with its Envoy data plane, as an operator runs it: start, serve, drain, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from gateway.triton.launcher import TritonServer
from tests.support.net import free_port
from tests.support.processes import assert_all_gone, descendants

pytestmark = pytest.mark.triton


def _wait_serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _grpc_requests_active(metrics_url: str) -> int:
    text = httpx.get(metrics_url, timeout=5).text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("envoy_http_downstream_rq_active") and "public_grpc" in line
    )


def test_serve_runs_envoy_drains_in_flight_work_and_leaves_nothing(
    tritons: list[TritonServer], tmp_path: Path
) -> None:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    triton = tritons[0]
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"listen: {{grpc: '127.0.0.1:{grpc_port}', http: '127.0.0.1:{http_port}', "
        f"metrics: '127.0.0.1:{metrics_port}'}}\n"
        f"database_url: 'sqlite:///{tmp_path / 'catalog.db'}'\n"
        f"backends: [{{facility: lab, grpc: '{triton.grpc_address}', "
        f"http: '127.0.0.1:{triton.ports.http}'}}]\n"
        "auth: {enabled: false}\n"
        "shutdown_grace_s: 20\n"
        f"envoy: {{enabled: true, work_dir: '{tmp_path / 'envoy'}'}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONIC_GATEWAY_")}
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=out, env=env,
            start_new_session=True,  # its own process group, as in an operator's terminal
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{http_port}"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        _wait_serving(url, proc, log)
        children = descendants(proc.pid)
        cmdlines = [Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace") for c in children]
        assert any("envoy" in c for c in cmdlines), cmdlines
        # The public port is Envoy's; metrics are on their own port and carry Envoy's statistics.
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404
        scrape = httpx.get(metrics_url, timeout=5).text
        assert "sonic_gateway_backend_healthy" in scrape
        assert "envoy_server_live" in scrape

        # A slow request in flight when Ctrl-C arrives is still answered (delay_fp32 sleeps per patch).
        x = np.ones((4096, 48, 48, 1), np.float32)
        result: dict[str, object] = {}

        def slow_call() -> None:
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            try:
                result["out"] = client.infer("delay_fp32", [inp], client_timeout=60).as_numpy("OUTPUT0")
            except Exception as exc:
                result["error"] = exc
            finally:
                client.close()

        caller = threading.Thread(target=slow_call)
        caller.start()
        deadline = time.monotonic() + 20
        while _grpc_requests_active(metrics_url) == 0:  # wait until it is in flight
            assert time.monotonic() < deadline, "the slow request never started"
            time.sleep(0.02)
        # Ctrl-C in a terminal signals the whole process group: Envoy must still drain, not die at once.
        os.killpg(proc.pid, signal.SIGINT)
        caller.join(60)
        assert "error" not in result, result.get("error")
        out = result["out"]
        assert isinstance(out, np.ndarray)
        assert out.shape == (4096, 1)
        assert proc.wait(40) == 0
        text = log.read_text()
        assert "draining" in text
        assert "drained and stopped" in text
        assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
