"""Metrics created once per Prometheus registry.

prometheus_client refuses a second family of the same name in one registry, while tests (and a
process that builds a second gateway) pass the same registry again: each metric family is built
the first time a registry asks for it and reused afterwards.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import REGISTRY, CollectorRegistry

M = TypeVar("M")


def once_per_registry(build: Callable[[CollectorRegistry], M]) -> Callable[[CollectorRegistry | None], M]:
    """``build(registry)`` on first use for each registry (None: the global one), cached after."""
    made: weakref.WeakKeyDictionary[CollectorRegistry, M] = weakref.WeakKeyDictionary()

    def get(registry: CollectorRegistry | None = None) -> M:
        chosen = REGISTRY if registry is None else registry
        metric = made.get(chosen)
        if metric is None:
            metric = made[chosen] = build(chosen)
        return metric

    get.__doc__ = build.__doc__
    return get
