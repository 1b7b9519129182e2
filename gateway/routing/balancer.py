"""Least-loaded choice: every backend's load signal, or power-of-two-choices among many.

The load of backend ``b`` (see docs/routing.md for why)::

    load(b) = (F(b) + max(0, Q(b) - F(b))) / capacity(b)

``F``: requests in flight to ``b`` from every gateway process and replica (shared state);
``Q``: requests queued at ``b`` as Triton reports them (``nv_inference_pending_request_count``).
``Q`` already contains the gateways' own queued requests, which cannot be told apart from others', so
only the part of the queue the gateways cannot account for is added: the queue counts when the
backend is busy with traffic the gateways did not send.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from gateway.routing.backend import Backend

# Up to this many candidates every one is compared; above it, two are sampled (power of two choices):
# nearly as good as the full minimum, and with stale shared counts it avoids every gateway process
# herding onto the same apparently-least-loaded backend.
FULL_SCAN_UP_TO = 3
_RNG = random.Random()  # noqa: S311 - load spreading, not cryptography


class LoadView(Protocol):
    def in_flight(self, backend_id: str) -> int: ...


class QueueView(Protocol):
    def pending(self, backend_id: str) -> int: ...


class LoadSignal:
    """The number the balancer minimises, from the shared in-flight counts and the scraped queues."""

    def __init__(self, load: LoadView, queues: QueueView | None = None) -> None:
        self.load = load
        self.queues = queues

    def __call__(self, backend: Backend) -> float:
        in_flight = self.load.in_flight(backend.id)
        queued = self.queues.pending(backend.id) if self.queues is not None else 0
        return (in_flight + max(0, queued - in_flight)) / backend.capacity


def _least(candidates: Sequence[Backend], signal: LoadSignal, rng: random.Random) -> Backend:
    best: list[Backend] = []
    best_score = float("inf")
    for backend in candidates:
        score = signal(backend)
        if score < best_score:
            best, best_score = [backend], score
        elif score == best_score:
            best.append(backend)
    return best[0] if len(best) == 1 else rng.choice(best)


def choose_least_loaded(
    candidates: Sequence[Backend], load: LoadView | LoadSignal, rng: random.Random | None = None
) -> Backend:
    """The candidate with the smallest load signal; a random one among equals.

    Random tie-breaking matters: with deterministic ties every idle gateway process would pick the
    same backend first, and the first requests of a burst would all land on it.
    """
    if not candidates:
        raise ValueError("no candidates")
    if len(candidates) == 1:
        return candidates[0]
    signal = load if isinstance(load, LoadSignal) else LoadSignal(load)
    chooser = rng or _RNG
    if len(candidates) > FULL_SCAN_UP_TO:
        candidates = chooser.sample(list(candidates), 2)
    return _least(candidates, signal, chooser)
