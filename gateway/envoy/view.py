"""What the control plane tells Envoy, as plain immutable data (the input of ``render``).

A view is built from settings, the registry's snapshot (backends, health, consistency verdicts),
Triton's queues and the catalog's model groups; ``render`` turns it into Envoy resources without
looking anywhere else, so two equal views always render equal resources.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Endpoint:
    backend_id: str
    facility: str
    host: str
    port: int
    # Envoy's load-balancing weight: capacity, lowered while Triton's queue for the model is long.
    weight: int


@dataclass(frozen=True)
class ModelView:
    name: str
    grpc: tuple[Endpoint, ...]
    http: tuple[Endpoint, ...]
    # Groups allowed to use the model (None: anyone with an inference token).
    groups: tuple[str, ...] | None
    # Versions every endpoint serves: a request naming another version takes the Python path,
    # which routes it to the backends that have it (or answers NOT_FOUND).
    versions: tuple[str, ...]

    @property
    def key(self) -> str:
        """A short, stable, name-safe id for the model's clusters (model names are free text)."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Addresses:
    """Where everything listens. Public: clients; the rest is loopback-only plumbing."""

    public_grpc: tuple[str, int]
    public_http: tuple[str, int]
    admin: tuple[str, int]
    control_grpc: tuple[str, int]  # the Python slow path (gRPC) and the access-log service
    control_http: tuple[str, int]  # the Python slow path (REST, /api/v1) and token verdicts


@dataclass(frozen=True)
class DataPlaneView:
    models: tuple[ModelView, ...] = ()


@dataclass(frozen=True)
class StaticView:
    """What changes only with a restart: addresses and limits of the data plane."""

    addresses: Addresses
    auth_enabled: bool = True
    # Rate limits configured: Envoy asks the control plane's rate-limit service (which charges the
    # shared, Redis-global buckets) before a fast-path request leaves.
    rate_limited: bool = False
    max_request_bytes: int = 64 * 1024 * 1024
    default_timeout_s: float = 300.0
    circuit_failure_threshold: int = 3
    circuit_base_ejection_s: float = 1.0
    circuit_max_ejection_s: float = 60.0
    retry_max_request_bytes: int = 4 * 1024 * 1024
    drain_time_s: float = 30.0
    # The file Envoy appends one usage line per fast-path request to. The control plane always sets
    # it (and follows it); renders no one serves (benchmarks, tests) log nowhere.
    usage_log: str = os.devnull
