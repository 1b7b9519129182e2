"""Least-loaded choice: in-flight requests divided by capacity, ties broken at random."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from gateway.routing.backend import Backend


class LoadView(Protocol):
    def in_flight(self, backend_id: str) -> int: ...


def choose_least_loaded(
    candidates: Sequence[Backend], load: LoadView, rng: random.Random | None = None
) -> Backend:
    """The candidate with the smallest ``in_flight / capacity``; a random one among equals.

    Random tie-breaking matters: with deterministic ties every idle gateway process would pick the
    same backend first, and the first requests of a burst would all land on it.
    """
    if not candidates:
        raise ValueError("no candidates")
    if len(candidates) == 1:
        return candidates[0]
    best: list[Backend] = []
    best_score = float("inf")
    for backend in candidates:
        score = load.in_flight(backend.id) / backend.capacity
        if score < best_score:
            best, best_score = [backend], score
        elif score == best_score:
            best.append(backend)
    return best[0] if len(best) == 1 else (rng or random).choice(best)
