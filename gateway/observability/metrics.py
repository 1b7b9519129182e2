"""The gateway's Prometheus metric families, created once per registry.

Label values are bounded by construction: ``frontend`` is ``grpc``/``http``; ``model``/``version``
come from what the registry's backends reported (see :mod:`.labels`); ``facility``/``backend`` are
registered backends (empty when no backend was chosen); ``outcome`` is a lower-case gRPC status name
and ``code`` its HTTP status. Never a subject, a job id or a token.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.observability.registries import once_per_registry

# Per-request labels shared by the counters and histograms below.
REQUEST_LABELS = ("frontend", "model", "version", "facility", "backend")
# Gateway overhead is usually well under a millisecond, a batch of 1693 patches takes ~0.5 s on a
# CPU, a slow facility up to the deadline: 250 us .. 30 s.
LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class GatewayMetrics:
    """Every data-path metric family; see docs/observability.md for what each one means."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.requests = Counter(
            "sonic_gateway_requests",
            "Inference requests answered, by outcome (lower-case gRPC status) and HTTP status code",
            [*REQUEST_LABELS, "outcome", "code"],
            registry=r,
        )
        self.inferences = Counter(
            "sonic_gateway_inferences",
            "Inferences (batch items) served successfully",
            REQUEST_LABELS,
            registry=r,
        )
        self.request_bytes = Counter(
            "sonic_gateway_request_bytes",
            "Inference request payload bytes received from clients (as sent, compressed or not)",
            REQUEST_LABELS,
            registry=r,
        )
        self.response_bytes = Counter(
            "sonic_gateway_response_bytes",
            "Inference response payload bytes returned to clients from backends",
            REQUEST_LABELS,
            registry=r,
        )
        self.overhead = Histogram(
            "sonic_gateway_overhead_seconds",
            "Time an inference spent in the gateway itself (auth, routing, forwarding), backend excluded",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_time = Histogram(
            "sonic_gateway_backend_duration_seconds",
            "Time from forwarding an inference to a backend until its answer (all attempts)",
            REQUEST_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sonic_gateway_in_flight_requests",
            "Inference requests being handled by the gateway now",
            ["frontend"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.backend_in_flight = Gauge(
            "sonic_gateway_backend_in_flight_requests",
            "Inference requests forwarded to a backend and not yet answered",
            ["facility", "backend"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.routing = Counter(
            "sonic_gateway_routing_decisions",
            "Backends chosen for inference requests; attempt=retry is a failover after an unreachable one",
            ["frontend", "model", "facility", "backend", "attempt"],
            registry=r,
        )
        self.ejections = Counter(
            "sonic_gateway_backend_ejections",
            "Times a backend was taken out of routing by the data path (until its next good health probe)",
            ["facility", "backend", "reason"],
            registry=r,
        )
        self.authorization_denials = Counter(
            "sonic_gateway_authorization_denials",
            "Valid tokens refused for a model (missing scope, group not allowed), by issuer and reason",
            ["issuer", "reason"],
            registry=r,
        )
        self.provenance_buffer = Gauge(
            "sonic_gateway_provenance_buffer_events",
            "Usage (provenance) events waiting to be written when the last flush began",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.provenance_written = Counter(
            "sonic_gateway_provenance_written_events",
            "Usage (provenance) events written to the catalog",
            registry=r,
        )
        self.provenance_dropped = Counter(
            "sonic_gateway_provenance_dropped_events",
            "Usage (provenance) events dropped because the buffer was full (the catalog is behind)",
            registry=r,
        )
        self.provenance_failures = Counter(
            "sonic_gateway_provenance_flush_failures",
            "Failed attempts to write usage events to the catalog (events kept for the next flush)",
            registry=r,
        )


# The families in a registry (default: the global one), created once per registry.
gateway_metrics = once_per_registry(GatewayMetrics)
