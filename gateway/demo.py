"""``sonic-gateway demo``: two local Triton facilities, the gateway with real token validation in
front of them, and a reconstruction-style job sending ProtoDUNE-like patches in batches of 235 and
1693. Every process it starts is stopped on exit, on Ctrl-C, on SIGTERM and on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gateway.app import Gateway
from gateway.catalog import migrate
from gateway.config import load_settings
from gateway.core.recording import InMemoryRecorder
from gateway.triton.launcher import TritonPorts, TritonServer

FACILITIES = ("lab-gpu-cluster", "hpc-centre")
CLASSES = ("track", "shower", "none")


def _free_port(preferred: int = 0) -> int:
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            chosen: int = sock.getsockname()[1]
            return chosen
    raise OSError("no free port on 127.0.0.1")


def _say(message: str) -> None:
    print(message, flush=True)


class GatewayThread:
    """The gateway on its own event loop in a thread, so blocking callers (the demo's job, a test's
    HTTP fuzzer) can run in the calling thread."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)

    def __enter__(self) -> Gateway:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(60)
        return self.gateway

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.gateway.stop(grace_s=1), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()  # its self-pipe sockets, not left to the garbage collector


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_demo(args: argparse.Namespace) -> int:
    try:
        from sonic_client import Client
        from sonic_client.protodune import classify_event, extract_patches, find_hits, generate_event
    except ImportError as exc:
        _say(
            f"the demo's job runs the thin client, which is not installed ({exc}): "
            "pip install 'sonic-gateway[demo]' ./client (from a checkout: make demo)"
        )
        return 2

    from gateway.auth.dev_issuer import DevIssuer

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tritons = [
        TritonServer(
            TritonPorts(_free_port(), _free_port(), _free_port()),
            workdir=workdir / "triton",
            log_path=workdir / f"triton-{name}.log",
        )
        for name in FACILITIES
    ]
    with _sigterm_as_interrupt():
        try:
            _say("== Starting two Triton facilities (CPU, model_repository/) ...")
            for server in tritons:
                server.start()
            for name, server in zip(FACILITIES, tritons, strict=True):
                started = time.monotonic()
                server.wait_ready(180)
                _say(
                    f"   {name:<16} gRPC {server.grpc_address}  ready in {time.monotonic() - started:.1f} s"
                    f"  (log: {server.log_path})"
                )
            grpc_port, http_port = _free_port(8001), _free_port(8000)
            settings = load_settings(
                None,
                database_url=f"sqlite:///{workdir / 'catalog.db'}",
                listen={"grpc": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"},
                backends=[
                    {"facility": name, "grpc": t.grpc_address, "http": f"127.0.0.1:{t.ports.http}"}
                    for name, t in zip(FACILITIES, tritons, strict=True)
                ],
                auth={"dev_issuer": {"enabled": True, "key_dir": str(workdir / "dev-issuer")}},
            )
            migrate.upgrade(settings.database_url)  # the demo's own catalog, in its work directory
            token = DevIssuer(settings.auth.dev_issuer).mint("demo-physicist", scopes=["compute.read"])
            recorder = InMemoryRecorder()
            _say(f"== Starting the gateway: gRPC 127.0.0.1:{grpc_port}, HTTP 127.0.0.1:{http_port}")
            _say("   tokens from the development issuer are validated on every request")
            with GatewayThread(Gateway(settings, recorder=recorder)) as gateway:
                _run_job(gateway, token, args.events, Client, classify_event, generate_event)
                _settle(recorder)
                _show_shares(recorder)
                _show_patches(
                    f"127.0.0.1:{grpc_port}", token, Client, generate_event, find_hits, extract_patches
                )
            _say("== Done: every process the demo started has been stopped.")
            return 0
        except KeyboardInterrupt:
            _say("\n== Interrupted: stopping everything the demo started ...")
            return 130
        finally:
            for server in tritons:
                server.stop()


def _run_job(gateway: Gateway, token: str, events: int, client_cls, classify, generate) -> None:  # type: ignore[no-untyped-def]
    url = f"127.0.0.1:{gateway.grpc_port}"
    for batch_size in (235, 1693):
        _say(f"\n== Reconstruction job: {events} synthetic ProtoDUNE-SP events, batches of {batch_size}")
        _say(
            f"{'event':>5} {'patches':>8} {'requests':>8} {'MB sent':>8} {'preprocess':>10} {'transmit':>9} "
            f"{'wait':>8} {'inferences/s':>12}"
        )
        total_patches, total_time = 0, 0.0
        with client_cls(
            url,
            token=token,
            job_id=f"demo-batch{batch_size}",
            dataset="synthetic:protodune-sp",
            concurrency=1,
        ) as client:
            for i in range(events):
                report = classify(client, generate(1000 + i, event_id=i), batch_size=batch_size)
                service = report.transmit_s + report.wait_s
                total_patches += report.n_hits
                total_time += service
                _say(
                    f"{report.event_id:>5} {report.n_hits:>8} {report.n_batches:>8} "
                    f"{report.bytes_sent / 1e6:>8.1f} {report.preprocess_s:>9.3f}s "
                    f"{report.transmit_s:>8.3f}s "
                    f"{report.wait_s:>7.3f}s {report.n_hits / service:>12,.0f}"
                )
        _say(
            f"   batch {batch_size}: {total_patches / total_time:,.0f} inferences/s through the gateway "
            "(one blocking client, as in the paper's LArSoft module)"
        )


def _settle(recorder: InMemoryRecorder, quiet_s: float = 1.0, limit_s: float = 10.0) -> None:
    """Wait until usage stops arriving: Envoy streams fast-path records in batches (every 0.5 s)."""
    deadline = time.monotonic() + limit_s
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if len(recorder.events) != seen:
            seen, since = len(recorder.events), time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def _show_shares(recorder: InMemoryRecorder) -> None:
    requests = Counter(e.facility for e in recorder.events)
    inferences: Counter[str] = Counter()
    for e in recorder.events:
        inferences[e.facility] += e.inferences
    total = sum(requests.values()) or 1
    _say("\n== Where the requests went (least-loaded routing across facilities)")
    for facility in FACILITIES:
        _say(
            f"   {facility:<16} {requests[facility]:>5} requests ({100 * requests[facility] / total:5.1f} %)"
            f"  {inferences[facility]:>8,} inferences"
        )
    versions = {(e.model, e.version_served) for e in recorder.events}
    jobs = sorted({e.job_id or "-" for e in recorder.events})
    _say(
        f"   provenance: jobs {', '.join(jobs)} served by "
        + ", ".join(f"{m} v{v}" for m, v in sorted(versions))
    )


def _show_patches(url: str, token: str, client_cls, generate, find_hits, extract) -> None:  # type: ignore[no-untyped-def]
    event = generate(7, event_id=7)
    patches = extract(event.image, find_hits(event.image))[:5]
    with client_cls(url, token=token) as client:
        out = client.infer("emtrack_michel", {"main_input": patches})
    probs, michel = out["em_trk_none_netout"], out["michel_netout"].reshape(-1)
    _say("\n== A few classified patches (untrained stand-in weights: classes are illustrative)")
    _say(f"   {'patch':>5} {'charge':>8} {'track':>7} {'shower':>7} {'none':>7} {'michel':>7}  class")
    for i in range(len(patches)):
        _say(
            f"   {i:>5} {float(patches[i].sum()):>8.0f} {probs[i, 0]:>7.3f} {probs[i, 1]:>7.3f} "
            f"{probs[i, 2]:>7.3f} {michel[i]:>7.3f}  {CLASSES[int(np.argmax(probs[i]))]}"
        )


if __name__ == "__main__":
    sys.exit(run_demo(argparse.Namespace(events=2, workdir=".sonic/demo")))
