"""A Triton server at a facility, as the router sees it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The wire protocol a frontend forwards in: a backend can take it only if it has that endpoint.
Protocol = Literal["grpc", "http"]


@dataclass(frozen=True)
class Backend:
    """Static description of one backend; ``id`` is unique across facilities."""

    id: str
    facility: str
    grpc_address: str
    http_address: str | None = None
    metrics_address: str | None = None
    capacity: float = 1.0
    draining: bool = False

    def speaks(self, protocol: Protocol) -> bool:
        return protocol == "grpc" or self.http_address is not None

    @staticmethod
    def make_id(facility: str, grpc_address: str) -> str:
        return f"{facility}/{grpc_address}"


@dataclass
class BackendHealth:
    """What the health monitor last saw of a backend."""

    healthy: bool = False
    # model name -> versions that are READY on this backend
    models: dict[str, frozenset[str]] = field(default_factory=dict)
    last_error: str = ""
    last_seen: float = 0.0
