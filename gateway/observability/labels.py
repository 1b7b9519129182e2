"""Bounded label values: only model names and versions the registry's backends reported are labels.

A client can send any model name; it must not create a new time series. Names and versions no
backend has reported (typos, probes, attacks) all become :data:`UNKNOWN`.
"""

from __future__ import annotations

from gateway.routing.registry import Registry, Snapshot

UNKNOWN = "__unknown__"


class ModelLabels:
    """``(model, version) -> label values``, against the registry's current snapshot."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._snapshot: Snapshot | None = None
        self._known: dict[str, frozenset[str]] = {}

    def _models(self) -> dict[str, frozenset[str]]:
        snapshot = self._registry.snapshot
        if snapshot is not self._snapshot:  # recomputed only when health or registration changed
            self._known = snapshot.known_models()
            self._snapshot = snapshot
        return self._known

    def of(self, model: str, version: str) -> tuple[str, str]:
        versions = self._models().get(model)
        if versions is None:
            return UNKNOWN, ""
        if not version or version in versions:
            return model, version
        return model, UNKNOWN

    def model(self, model: str) -> str:
        return model if model in self._models() else UNKNOWN
