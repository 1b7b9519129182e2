"""``sonic_gateway_token_validations_total{issuer,outcome,reason}`` with bounded labels.

``issuer`` is a configured issuer or ``"unknown"``; ``outcome`` is ``accepted`` or ``rejected``;
``reason`` is ``validated``/``cached`` for accepted tokens and the rejection's ``detail`` code
otherwise (a fixed vocabulary in this package).
"""

from __future__ import annotations

import weakref

from prometheus_client import REGISTRY, CollectorRegistry, Counter

UNKNOWN_ISSUER = "unknown"
_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Counter] = weakref.WeakKeyDictionary()


def token_validations(registry: CollectorRegistry | None = None) -> Counter:
    """The counter in ``registry`` (default: the global one), created once per registry."""
    chosen = REGISTRY if registry is None else registry
    counter = _COUNTERS.get(chosen)
    if counter is None:
        counter = Counter(
            "sonic_gateway_token_validations",
            "Bearer tokens accepted and rejected, by issuer and reason",
            ["issuer", "outcome", "reason"],
            registry=chosen,
        )
        _COUNTERS[chosen] = counter
    return counter
