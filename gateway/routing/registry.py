"""Which backends exist, which are healthy, and which models each serves.

The router reads an immutable snapshot, swapped atomically when health or registration changes, so
the hot path never locks and never touches the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.routing.backend import Backend, BackendHealth, Protocol


@dataclass(frozen=True)
class Snapshot:
    backends: dict[str, Backend] = field(default_factory=dict)
    health: dict[str, BackendHealth] = field(default_factory=dict)
    # model name -> ids of healthy, non-draining backends serving it (any version)
    serving: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # (backend id, model) pairs taken out of routing for that model only (the catalog's consistency check)
    excluded: frozenset[tuple[str, str]] = frozenset()

    def candidates(self, model: str, version: str = "", protocol: Protocol = "grpc") -> list[Backend]:
        """Healthy, non-draining backends serving ``model[:version]`` that speak ``protocol``."""
        out = []
        for i in self.serving.get(model, ()):
            backend = self.backends[i]
            if not backend.speaks(protocol):
                continue
            if version and version not in self.health[i].models.get(model, frozenset()):
                continue
            out.append(backend)
        return out

    def known_models(self) -> dict[str, frozenset[str]]:
        """Every model any backend has reported, healthy or not, with the union of its versions."""
        out: dict[str, set[str]] = {}
        for health in self.health.values():
            for name, versions in health.models.items():
                out.setdefault(name, set()).update(versions)
        return {name: frozenset(v) for name, v in out.items()}

    def healthy_backends(self, protocol: Protocol = "grpc") -> list[Backend]:
        return [
            b
            for i, b in self.backends.items()
            if self.health[i].healthy and not b.draining and b.speaks(protocol)
        ]


class Registry:
    """Holds the current :class:`Snapshot`; writers replace it, readers just read ``snapshot``."""

    def __init__(self, backends: Iterable[Backend] = ()) -> None:
        self.snapshot = Snapshot()
        self.set_backends(backends)

    def set_backends(self, backends: Iterable[Backend]) -> None:
        """Replace the set of backends (static config or catalog), keeping health of those kept."""
        old = self.snapshot
        new_backends = {b.id: b for b in backends}
        health = {i: old.health.get(i, BackendHealth()) for i in new_backends}
        self._publish(new_backends, health)

    def update_health(
        self, backend_id: str, healthy: bool, models: dict[str, frozenset[str]] | None, error: str = ""
    ) -> None:
        old = self.snapshot
        if backend_id not in old.backends:
            return
        previous = old.health[backend_id]
        health = dict(old.health)
        health[backend_id] = BackendHealth(
            healthy=healthy,
            models=models if models is not None else previous.models,
            last_error=error,
            last_seen=time.time() if healthy else previous.last_seen,
        )
        self._publish(old.backends, health)

    def set_excluded(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Route ``model`` to none of the ``(backend id, model)`` pairs; other models are unaffected."""
        old = self.snapshot
        excluded = frozenset(pairs)
        if excluded != old.excluded:
            self._publish(old.backends, old.health, excluded)

    def mark_unreachable(self, backend_id: str, error: str) -> None:
        """Passive health: a failed connection takes the backend out until the next good probe."""
        self.update_health(backend_id, False, None, error)

    def _publish(
        self,
        backends: dict[str, Backend],
        health: dict[str, BackendHealth],
        excluded: frozenset[tuple[str, str]] | None = None,
    ) -> None:
        if excluded is None:
            excluded = self.snapshot.excluded
        serving: dict[str, list[str]] = {}
        for backend_id, backend in backends.items():
            state = health[backend_id]
            if not state.healthy or backend.draining:
                continue
            for model in state.models:
                if (backend_id, model) not in excluded:
                    serving.setdefault(model, []).append(backend_id)
        self.snapshot = Snapshot(
            backends=backends,
            health=health,
            serving={m: tuple(ids) for m, ids in serving.items()},
            excluded=excluded,
        )
