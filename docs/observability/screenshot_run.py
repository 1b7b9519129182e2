"""The real run behind dashboard.png: two Triton facilities, ``serve --workers 2``, Prometheus, traffic.

Starts everything on the ports prometheus.yml names (gateway HTTP 8000 / gRPC 8001 served by its
Envoy, metrics 8003; Tritons 9000-9002 and 9010-9012; Prometheus 9090), sends a reconstruction-like
mix for ``--seconds`` (EmTrackMichelId batches of 235 over gRPC, identity batches of 64 over HTTP
with binary tensors, a trickle of bad tokens, tokens without the inference scope and unknown model
names), takes the ``nersc-hpc`` facility down for a while in the middle (ejection, failover,
recovery), then renders the dashboard with render_dashboard.py and stops every process it started::

    .venv/bin/python docs/observability/screenshot_run.py --seconds 150
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as tg
import tritonclient.http as th

from gateway.auth.dev_issuer import DevIssuer
from gateway.catalog.migrate import upgrade_url
from gateway.config import DevIssuerSettings
from gateway.triton.launcher import TritonError, TritonPorts, TritonServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FACILITIES = {"fermilab-lab": TritonPorts(9001, 9000, 9002), "nersc-hpc": TritonPorts(9011, 9010, 9012)}


def patches(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.zeros((n, 48, 48, 1), np.float32)
    idx = rng.integers(18, 30, size=(n, 40, 2))
    for i in range(n):
        x[i, idx[i, :, 0], idx[i, :, 1], 0] = rng.exponential(50.0, size=40)
    return x


@contextlib.contextmanager
def process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 in {timeout_s} s")
        time.sleep(0.5)


def traffic(stop: threading.Event, token: str, unscoped: str) -> None:
    rng = np.random.default_rng(0)
    auth = {"authorization": f"Bearer {token}"}

    def grpc_job(job: str) -> None:
        with tg.InferenceServerClient("127.0.0.1:8001") as client:
            x = patches(235, rng)
            while not stop.is_set():
                inp = tg.InferInput("main_input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x)
                with contextlib.suppress(Exception):
                    client.infer("emtrack_michel", [inp], headers={**auth, "sonic-job-id": job})

    def http_job() -> None:
        client = th.InferenceServerClient("127.0.0.1:8000")
        x = patches(64, rng)
        while not stop.is_set():
            inp = th.InferInput("INPUT0", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            with contextlib.suppress(Exception):
                client.infer("identity_fp32", [inp], headers=dict(auth))  # it adds to the dict
            time.sleep(0.05)
        client.close()

    def mistakes() -> None:
        with httpx.Client(base_url="http://127.0.0.1:8000", trust_env=False) as client:
            while not stop.wait(1.5):
                client.post(
                    "/v2/models/identity_fp32/infer", headers={"authorization": "Bearer expired-or-junk"}
                )
                client.post("/v2/models/emtrack_michel/infer", content=b"{}")  # no token at all
                client.post("/v2/models/emtrak_michel/infer", content=b"{}", headers=auth)  # a typo
                client.post(
                    "/v2/models/identity_fp32/infer",
                    content=b"{}",
                    headers={"authorization": f"Bearer {unscoped}"},
                )

    # Daemons: a failed run must not hang on its load generators.
    threads = [threading.Thread(target=grpc_job, args=(f"reco-{i}",), daemon=True) for i in range(2)]
    threads += [
        threading.Thread(target=http_job, daemon=True),
        threading.Thread(target=mistakes, daemon=True),
    ]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150)
    parser.add_argument("--workdir", default=str(REPO / ".sonic" / "observability-run"))
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{work / 'catalog.db'}"
    upgrade_url(db)
    dev = DevIssuerSettings(enabled=True, key_dir=str(work / "dev-issuer"))
    issuer = DevIssuer(dev)
    token = issuer.mint("demo-physicist", scopes=["compute.read"])
    unscoped = issuer.mint("demo-visitor", scopes=[])
    backends = ", ".join(
        f"{{facility: {name}, grpc: '127.0.0.1:{p.grpc}', http: '127.0.0.1:{p.http}', "
        f"metrics: '127.0.0.1:{p.metrics}'}}"
        for name, p in FACILITIES.items()
    )
    config = work / "gateway.yaml"
    config.write_text(
        "listen: {http: '127.0.0.1:8000', grpc: '127.0.0.1:8001', metrics: '127.0.0.1:8003'}\n"
        f"database_url: '{db}'\n"
        f"backends: [{backends}]\n"
        "routing: {health_interval_s: 2}\n"
        f"auth: {{dev_issuer: {{enabled: true, key_dir: '{dev.key_dir}'}}}}\n"
        "log_format: json\n"
    )
    tritons = {
        name: TritonServer(ports, log_path=work / f"triton-{name}.log", workdir=REPO / ".sonic" / "triton")
        for name, ports in FACILITIES.items()
    }
    try:
        for server in tritons.values():
            server.start()
        for server in tritons.values():
            server.wait_ready(180)
        gateway_cmd = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config),
            "--workers",
            "2",
        ]
        prometheus_cmd = [
            "/usr/bin/prometheus",
            f"--config.file={HERE / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prometheus'}",
            "--web.listen-address=127.0.0.1:9090",
        ]
        with (
            process(gateway_cmd, work / "gateway.log"),
            process(prometheus_cmd, work / "prometheus.log"),
        ):
            wait_http("http://127.0.0.1:8000/v2/health/ready")
            wait_http("http://127.0.0.1:9090/-/ready")
            started = time.time()
            print(f"traffic for {args.seconds:.0f} s (logs in {work})", flush=True)
            stop = threading.Event()
            sender = threading.Thread(target=traffic, args=(stop, token, unscoped), daemon=True)
            sender.start()
            time.sleep(args.seconds * 0.4)
            print("taking nersc-hpc down", flush=True)
            tritons["nersc-hpc"].stop()
            time.sleep(args.seconds * 0.25)
            print("bringing nersc-hpc back", flush=True)
            for attempt in range(3):  # a restart on a busy machine occasionally aborts while starting
                tritons["nersc-hpc"].start()
                try:
                    tritons["nersc-hpc"].wait_ready(180)
                    break
                except TritonError:
                    if attempt == 2:
                        raise
            time.sleep(max(0.0, started + args.seconds - time.time()))
            stop.set()
            sender.join(60)
            time.sleep(12)  # the last scrapes
            minutes = (time.time() - started) / 60 + 0.5
            subprocess.run(
                [sys.executable, str(HERE / "render_dashboard.py"), "--minutes", f"{minutes:.1f}"], check=True
            )
    finally:
        for server in tritons.values():
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
