"""``sonic_gateway_catalog_model_consistent{model,facility,backend}``: the consistency check's verdict.

1 when a catalog backend serves the model as the catalog describes it, 0 when the check took that
backend out of routing for that model. Labels are bounded by the catalog: only catalog backends and
model names the catalog knows appear, and label sets are removed when their deployment goes away.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from gateway.observability.registries import once_per_registry


@once_per_registry
def model_consistent(registry: CollectorRegistry) -> Gauge:
    """The gauge in ``registry`` (default: the global one), created once per registry."""
    return Gauge(
        "sonic_gateway_catalog_model_consistent",
        "1 if the backend serves the model as the catalog describes it; "
        "0 if the consistency check took the backend out of routing for that model",
        ["model", "facility", "backend"],
        registry=registry,
    )
