"""``serve --workers N``: the workers' metrics meet in one directory and any worker serves them all.

prometheus_client's multiprocess mode: the parent creates a fresh directory and names it in
``PROMETHEUS_MULTIPROC_DIR`` before the workers start (the client library reads it when imported,
so it must be in the workers' environment from the beginning); each worker writes its values to
memory-mapped files there; ``/metrics`` merges them with ``MultiProcessCollector``. The parent
removes the directory when it exits.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_for_workers() -> str:
    """A fresh metrics directory for workers started from now on; removed at this process's exit."""
    path = tempfile.mkdtemp(prefix="sonic-gateway-metrics-")
    os.environ[ENV] = path
    atexit.register(shutil.rmtree, path, True)
    return path


def is_enabled() -> bool:
    return bool(os.environ.get(ENV))


def exposition_registry(registry: CollectorRegistry, local: Iterable[Collector]) -> CollectorRegistry:
    """What ``/metrics`` serves: ``registry`` itself, or (multiprocess) every worker's values merged
    plus this worker's ``local`` scrape-time collectors."""
    if not is_enabled():
        return registry
    merged = CollectorRegistry()
    MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    for collector in local:
        merged.register(collector)
    return merged
