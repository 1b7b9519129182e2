"""``serve --workers N``: N gateway processes on the same ports (SO_REUSEPORT), one event loop each.

With the Envoy data plane (the default) the data path is Envoy's: N becomes Envoy's worker threads
and one Python process is its control plane and slow path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal

from gateway.allocator import keep_freed_memory
from gateway.app import serve
from gateway.config import Settings
from gateway.observability import multiprocess
from gateway.observability.logs import configure_logging

log = logging.getLogger(__name__)


def _run_one(settings: Settings) -> None:
    keep_freed_memory(settings.keep_freed_memory_mb)  # per process: each worker has its own heap

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())


def _child(data: dict[str, object]) -> None:
    # Settings travel as plain data: the class built for a config file cannot be pickled.
    settings = Settings.model_validate(data)
    configure_logging(settings.log_level, settings.log_format)
    _run_one(settings)


def run_workers(settings: Settings, workers: int) -> int:
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    configure_logging(settings.log_level, settings.log_format)
    if settings.envoy.enabled and workers > 1:
        # Envoy carries the data path with its own worker threads; one control plane drives it
        # (several would each start an Envoy on the same ports).
        concurrency = max(settings.envoy.concurrency, workers)
        log.info("--workers %d with the Envoy data plane: Envoy runs %d worker threads", workers, concurrency)
        settings = settings.model_copy(
            update={"envoy": settings.envoy.model_copy(update={"concurrency": concurrency})}
        )
        workers = 1
    if workers == 1:
        _run_one(settings)
        return 0
    ctx = multiprocessing.get_context("spawn")
    multiprocess.enable_for_workers()  # before any worker starts: they read it when they import
    procs = [
        ctx.Process(target=_child, args=(settings.model_dump(mode="json"),), name=f"gateway-{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    stopping = False

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    # A worker that dies on its own takes the others down: a half-running gateway hides failures.
    while all(p.is_alive() for p in procs) and not stopping:
        for p in procs:
            p.join(0.5)
    forward(signal.SIGTERM, None)
    for p in procs:
        p.join(settings.shutdown_grace_s + 10)
        if p.is_alive():
            p.kill()
    return 0 if stopping else 1
