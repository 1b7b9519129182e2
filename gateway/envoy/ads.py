"""The aggregated discovery service (ADS, state of the world) Envoy subscribes to for its dynamic
resources: clusters (CDS), their endpoints (EDS) and the route tables (RDS).

One gRPC stream per Envoy, served by the control plane's loopback gRPC server. ``publish`` swaps in
the rendered resources (plain dicts from :mod:`gateway.envoy.render`), and every stream sends each
subscribed type whose content changed; equal content is never resent. Why a stream and not watched
files: Envoy opens one inotify instance per watched file subscription (one per cluster), and Linux
allows 128 per user, so a catalog of about sixty models took Envoy down (docs/routing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401 - @type in routes
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401 - @type in clusters
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.type.matcher.v3 import http_inputs_pb2  # noqa: F401 - @type in route matchers
from google.protobuf import any_pb2, json_format

from gateway.envoy.render import (
    T_CLUSTER,
    T_ENDPOINTS,
    T_ROUTES,
    render_clusters,
    render_endpoints,
    render_routes,
)
from gateway.envoy.view import DataPlaneView, StaticView

log = logging.getLogger("gateway.envoy.ads")

_MESSAGES: dict[str, Any] = {
    T_CLUSTER: cluster_pb2.Cluster,
    T_ENDPOINTS: endpoint_pb2.ClusterLoadAssignment,
    T_ROUTES: route_pb2.RouteConfiguration,
}
# Adds are safe in this order (a route never names a cluster Envoy lacks for long).
_ORDER = (T_CLUSTER, T_ENDPOINTS, T_ROUTES)


_LB_ENDPOINT_KEYS = frozenset({"endpoint", "load_balancing_weight", "metadata"})


def _endpoints_directly(body: dict[str, Any]) -> Any | None:
    """The ClusterLoadAssignment :func:`render_endpoints` writes, built field by field (None for any
    other shape). json_format.ParseDict is pure Python: ~3 ms per 50-endpoint model, so a capacity
    change at 50 facilities x 200 models (every model of one facility re-sent) spent 0.7 s there."""
    if set(body) != {"cluster_name", "endpoints"}:
        return None
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=body["cluster_name"])
    for group in body["endpoints"]:
        if set(group) != {"lb_endpoints"}:
            return None
        locality = message.endpoints.add()
        for lb in group["lb_endpoints"]:
            endpoint, metadata = lb.get("endpoint"), lb.get("metadata")
            if set(lb) != _LB_ENDPOINT_KEYS or set(endpoint) != {"address", "hostname"}:
                return None
            if set(endpoint["address"]) != {"socket_address"} or set(metadata) != {"filter_metadata"}:
                return None
            socket = endpoint["address"]["socket_address"]
            if set(socket) != {"address", "port_value"}:
                return None
            out = locality.lb_endpoints.add()
            out.endpoint.address.socket_address.address = socket["address"]
            out.endpoint.address.socket_address.port_value = socket["port_value"]
            out.endpoint.hostname = endpoint["hostname"]
            out.load_balancing_weight.value = lb["load_balancing_weight"]
            for name, fields in metadata["filter_metadata"].items():
                out.metadata.filter_metadata[name].update(fields)
    return message


def _message(type_url: str, body: dict[str, Any]) -> Any:
    if type_url == T_ENDPOINTS:
        direct = _endpoints_directly(body)
        if direct is not None:
            return direct
    return json_format.ParseDict(body, _MESSAGES[type_url]())


@dataclass
class PushStats:
    resources_changed: int = 0
    bytes_changed: int = 0  # serialized size of the resources that changed (what a push carries)


@dataclass(frozen=True)
class _TypeState:
    version: int
    resources: dict[str, Any]  # name -> packed Any


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self._state: dict[str, _TypeState] = {t: _TypeState(0, {}) for t in _ORDER}
        self._texts: dict[tuple[str, str], str] = {}  # (type, name) -> the JSON last packed
        self._wakes: set[asyncio.Event] = set()
        self.streams = 0
        self.rejected = 0

    def publish_resources(self, resources: dict[str, dict[str, dict[str, Any]]]) -> PushStats:
        """Replace each type's resources (name -> resource dict); streams are told at once."""
        stats = PushStats()
        for type_url in _ORDER:
            old = self._state[type_url]
            fresh: dict[str, Any] = {}
            changed = False
            for name, body in resources.get(type_url, {}).items():
                text = json.dumps(body, sort_keys=True)
                packed = old.resources.get(name)
                if packed is None or self._texts.get((type_url, name)) != text:
                    message = _message(type_url, body)
                    packed = any_pb2.Any()
                    packed.Pack(message)
                    self._texts[(type_url, name)] = text
                    stats.resources_changed += 1
                    stats.bytes_changed += packed.ByteSize()
                    changed = True
                fresh[name] = packed
            removed = set(old.resources) - set(fresh)
            for name in removed:
                self._texts.pop((type_url, name), None)
            if changed or removed:
                self._state[type_url] = _TypeState(old.version + 1, fresh)
        if stats.resources_changed:
            for wake in self._wakes:
                wake.set()
        return stats

    def _response(self, type_url: str, names: frozenset[str] | None, nonce: int) -> Any:
        state = self._state[type_url]
        chosen: Iterable[Any] = (
            state.resources.values()
            if names is None
            else [state.resources[n] for n in sorted(names) if n in state.resources]
        )
        return discovery_pb2.DiscoveryResponse(
            version_info=str(state.version), resources=list(chosen), type_url=type_url, nonce=str(nonce)
        )

    async def StreamAggregatedResources(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        wake = asyncio.Event()
        subscribed: dict[str, frozenset[str] | None] = {}
        sent: dict[str, tuple[int, frozenset[str] | None]] = {}

        async def read() -> None:
            async for request in requests:
                if request.type_url not in self._state:
                    continue
                if request.error_detail.code:
                    self.rejected += 1
                    kind = request.type_url.rsplit(".", 1)[-1]
                    detail = request.error_detail.message
                    log.error("envoy rejected the %s update %s: %s", kind, request.version_info, detail)
                # Clusters are a wildcard subscription; endpoints and routes are asked for by name.
                names = None if request.type_url == T_CLUSTER else frozenset(request.resource_names)
                subscribed[request.type_url] = names
                wake.set()

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: wake.set())
        self._wakes.add(wake)
        self.streams += 1
        nonce = 0
        try:
            while True:
                await wake.wait()
                wake.clear()
                if reader.done():
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                        reader.result()
                    return
                for type_url in _ORDER:
                    if type_url not in subscribed:
                        continue
                    names = subscribed[type_url]
                    key = (self._state[type_url].version, names)
                    if sent.get(type_url) == key:
                        continue  # an ACK, or nothing new for this type
                    nonce += 1
                    yield self._response(type_url, names, nonce)
                    sent[type_url] = key
        finally:
            self._wakes.discard(wake)
            reader.cancel()


class AdsPublisher:
    """Renders a view and hands it to the ADS server (what ``EnvoyDataPlane`` publishes through)."""

    def __init__(self, static: StaticView, server: AdsServer) -> None:
        self.static = static
        self.server = server

    def publish(self, view: DataPlaneView) -> PushStats:
        clusters = {c["name"]: c for c in render_clusters(self.static, view)}
        return self.server.publish_resources(
            {
                T_CLUSTER: clusters,
                T_ENDPOINTS: render_endpoints(self.static, view),
                T_ROUTES: render_routes(self.static, view),
            }
        )


def register(server: grpc.aio.Server, ads: AdsServer) -> None:
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
