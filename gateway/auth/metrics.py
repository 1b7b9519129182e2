"""``sonic_gateway_token_validations_total{issuer,outcome,reason}`` with bounded labels.

``issuer`` is a configured issuer or ``"unknown"``; ``outcome`` is ``accepted`` or ``rejected``;
``reason`` is ``validated``/``cached`` for accepted tokens and the rejection's ``detail`` code
otherwise (a fixed vocabulary in this package).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from gateway.observability.registries import once_per_registry

UNKNOWN_ISSUER = "unknown"


@once_per_registry
def token_validations(registry: CollectorRegistry) -> Counter:
    """The counter in ``registry`` (default: the global one), created once per registry."""
    return Counter(
        "sonic_gateway_token_validations",
        "Bearer tokens accepted and rejected, by issuer and reason",
        ["issuer", "outcome", "reason"],
        registry=registry,
    )
