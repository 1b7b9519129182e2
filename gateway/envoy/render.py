"""Pure functions: a view of declared state -> Envoy resources (plain dicts, JSON-ready).

Nothing here reads a clock, a file or the network; :mod:`gateway.envoy.ads` serves what these return.
Listeners are static (they change only with settings, i.e. with a restart); routes,
clusters and endpoints are xDS resources on the control plane's ADS stream, so catalog writes,
health, draining and load reach Envoy without a restart and without touching open connections.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

from gateway.envoy.view import DataPlaneView, Endpoint, ModelView, StaticView
from gateway.observability.observer import ERROR_LIMIT

Json = dict[str, Any]

T_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
T_ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
T_ROUTES = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
T_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
T_EXT = "type.googleapis.com/envoy.extensions"
T_FILTERS = f"{T_EXT}.filters.http"
T_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Cluster names of the loopback plumbing; model clusters are "grpc-<key>" and "http-<key>".
SLOW_GRPC = "sonic_slow_grpc"
SLOW_HTTP = "sonic_slow_http"
# Envoy's own calls to the control plane (usage stream, keys, verdicts): never queued behind a
# client flood on the slow path.
CONTROL_GRPC = "sonic_control_grpc"
CONTROL_HTTP = "sonic_control_http"
# The slow path's concurrency bound: the Python frontends serve thousands of calls at once (their
# gRPC server's pending-call limit is raised to match), Envoy's default of 1024 refused a flood.
SLOW_PATH_MAX_REQUESTS = 10000
ROUTES_GRPC = "sonic_grpc"
ROUTES_HTTP = "sonic_http"
POLICY_FILTER = "sonic.policy"
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
# Large requests: the policy filter buffers one whole ModelInfer message before routing it.
WINDOW_BYTES = 64 * 1024 * 1024
# Characters of a client-sent tag (job, dataset, request id) a usage line keeps: the longest the
# catalog stores (a 512-character dataset) in the client's percent-encoding (<= 12 per character).
TAG_LIMIT = 8192


def grpc_cluster(model: ModelView) -> str:
    return f"grpc-{model.key}"


def http_cluster(model: ModelView) -> str:
    return f"http-{model.key}"


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _socket(address: tuple[str, int]) -> Json:
    return {"socket_address": {"address": address[0], "port_value": address[1]}}


# Routes, clusters and endpoints come over the control plane's one ADS stream (gateway/envoy/ads.py).
ADS_SOURCE: Json = {"ads": {}, "resource_api_version": "V3"}


def _http2_options(window: int) -> Json:
    return {
        "initial_stream_window_size": window,
        "initial_connection_window_size": window,
        "max_concurrent_streams": 1024,
    }


def _protocol_options(http2: bool, window: int) -> Json:
    explicit = {"http2_protocol_options": _http2_options(window)} if http2 else {"http_protocol_options": {}}
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": T_HTTP_OPTIONS,
            "explicit_http_config": explicit,
        }
    }


def _static_cluster(name: str, address: tuple[str, int], http2: bool, window: int) -> Json:
    limit = SLOW_PATH_MAX_REQUESTS
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": {"thresholds": [{"max_requests": limit, "max_pending_requests": limit}]},
        "per_connection_buffer_limit_bytes": window,
        "typed_extension_protocol_options": _protocol_options(http2, window),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(address)}}]}],
        },
    }


# -- policy (Lua) ------------------------------------------------------------------------------------


def _lua_string(value: str) -> str:
    """A Lua string literal for any text: printable ASCII kept, every other byte escaped as \\ddd."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        out.append(char if 32 <= byte < 127 and char not in '\\"' else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


@functools.cache
def _policy_template() -> str:
    return resources.files("gateway.envoy").joinpath("policy.lua").read_text(encoding="utf-8")


def render_policy(static: StaticView) -> str:
    return (
        _policy_template()
        .replace("--@AUTH@", "true" if static.auth_enabled else "false")
        .replace("--@CONTROL_CLUSTER@", _lua_string(CONTROL_HTTP))
        .replace("--@MAX_TIMEOUT_MS@", str(int(static.default_timeout_s * 1000)))
        .replace("--@RATE_LIMITED@", "true" if static.rate_limited else "false")
    )


def encode_name(name: str) -> str:
    """Issuers, subjects and groups travel percent-encoded between the control plane and the policy
    filter (one per line, or space-separated): any text survives the trip."""
    return quote(name, safe="")


# What comes back from the policy filter (access-log entries, rate-limit descriptors) names the same
# few callers on every request: each name is decoded once, not once per request.
decode_name = functools.lru_cache(maxsize=4096)(unquote)


# -- listeners (static) ---------------------------------------------------------------------------------


RATE_LIMIT_DOMAIN = "sonic"
# Descriptor entries of a fast-path request, read by gateway.envoy.ratelimit (all from the policy
# filter's dynamic metadata; groups are percent-encoded and space-separated, "-" for none).
RATE_LIMIT_ENTRIES = ("subject", "issuer", "rl_groups", "rl_inferences", "rl_bytes")


def _rate_limit_filter() -> Json:
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": f"{T_FILTERS}.ratelimit.v3.RateLimit",
            "domain": RATE_LIMIT_DOMAIN,
            "timeout": "1s",
            # Fail open, as the Python path does when Redis is out: limits protect, they do not gate.
            "failure_mode_deny": False,
            "rate_limited_as_resource_exhausted": True,
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": CONTROL_GRPC}},
                "transport_api_version": "V3",
            },
        },
    }


def _rate_limits() -> list[Json]:
    return [
        {
            "actions": [
                {
                    "metadata": {
                        "descriptor_key": key,
                        "metadata_key": {"key": "sonic", "path": [{"key": key}]},
                        "source": "DYNAMIC",
                    }
                }
                for key in RATE_LIMIT_ENTRIES
            ]
        }
    ]


# The policy filter's usage entry (dynamic metadata sonic:u, and the usage line's key): these fields,
# tab-separated, in this order.
USAGE_ENTRY = "u"
USAGE_FIELDS = ("model", "version", "subject", "issuer", "batch")


def usage_log_format(protocol: str) -> Json:
    """One JSON line per fast-path request: what :func:`gateway.envoy.usage.parse_line` reads.

    JSON, not text: the job and dataset are client-sent headers (a tab or a quote in them must not
    shift or forge fields), and Envoy's JSON formatter escapes every value. Error messages are cut
    to the access log's ERROR_LIMIT here, before they are written.
    """
    return {
        "protocol": protocol,  # one format per listener
        # model, version, subject, issuer, batch: one tab-separated entry (USAGE_FIELDS), set by
        # the policy filter; one metadata lookup instead of five is ~7% of Envoy's CPU per request.
        USAGE_ENTRY: f"%DYNAMIC_METADATA(sonic:{USAGE_ENTRY})%",
        "upstream": "%UPSTREAM_REMOTE_ADDRESS%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "job": f"%REQ(sonic-job-id):{TAG_LIMIT}%",
        "dataset": f"%REQ(sonic-dataset):{TAG_LIMIT}%",
        "request_id": f"%REQ(x-request-id):{TAG_LIMIT}%",
        "request_bytes": "%BYTES_RECEIVED%",
        "response_bytes": "%BYTES_SENT%",
        "duration_us": "%COMMON_DURATION(DS_RX_BEG:DS_TX_END:us)%",
        "backend_us": "%COMMON_DURATION(US_TX_BEG:US_RX_END:us)%",
        **(
            {
                # From the trailers, or from the headers of a trailers-only answer.
                "grpc_status": "%GRPC_STATUS(NUMBER)%",
                "grpc_message": f"%TRAILER(grpc-message):{ERROR_LIMIT}%",
                "grpc_message_headers": f"%RESP(grpc-message):{ERROR_LIMIT}%",
            }
            if protocol == "grpc"
            else {}
        ),
    }


def _access_log(static: StaticView, protocol: str) -> Json:
    """Every fast-path request, appended to the usage log the control plane follows.

    A file, not Envoy's gRPC access-log stream: the stream cost ~70 us of Envoy's CPU per request
    (a protobuf entry per request; docs/performance.md), a JSON line costs a fraction of that, and
    lines Envoy wrote survive a control-plane restart (:mod:`gateway.envoy.usage_log`).
    """
    return {
        "name": "envoy.access_loggers.file",
        "filter": {
            "metadata_filter": {
                "matcher": {
                    "filter": "sonic",
                    "path": [{"key": USAGE_ENTRY}],
                    "value": {"present_match": True},
                }
            }
        },
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": static.usage_log,
            "log_format": {"json_format": usage_log_format(protocol)},
        },
    }


def _listener(static: StaticView, name: str, address: tuple[str, int], grpc: bool) -> Json:
    # No jwt_authn: the policy filter's per-token verdict (from the validator, which checks the
    # signature with the keys gateway/auth vetted, and every other rule) is what admits a token, and
    # a signature check in Envoy as well cost ~15 us of CPU per request while deciding nothing more.
    filters: list[Json] = [
        {
            "name": POLICY_FILTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": render_policy(static)},
            },
        }
    ]
    if static.rate_limited:
        filters.append(_rate_limit_filter())
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    routes = ROUTES_GRPC if grpc else ROUTES_HTTP
    hcm: Json = {
        "@type": T_HCM,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "rds": {
            "route_config_name": routes,
            "config_source": ADS_SOURCE,
        },
        "http_filters": filters,
        "http2_protocol_options": _http2_options(WINDOW_BYTES),
        "access_log": [_access_log(static, "grpc" if grpc else "http")],
        "stream_idle_timeout": "0s",
        "request_timeout": "0s",
        "use_remote_address": True,
        # Clients get the request id on both paths (the Python path answers with it too).
        "always_set_request_id_in_response": True,
        "generate_request_id": True,
        "preserve_external_request_id": True,
        "drain_timeout": _duration(static.drain_time_s),
    }
    if not grpc:
        # Envoy's own answers (timeout, no upstream, too large) in Triton's REST error shape; over gRPC
        # Envoy already answers with a status and grpc-message.
        hcm["local_reply_config"] = {
            "body_format": {
                "json_format": {"error": "%LOCAL_REPLY_BODY%"},
                "content_type": "application/json",
            }
        }
    return {
        "name": name,
        "address": _socket(address),
        "per_connection_buffer_limit_bytes": static.max_request_bytes,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def render_bootstrap(static: StaticView) -> Json:
    a = static.addresses
    return {
        "node": {"id": "sonic-gateway", "cluster": "sonic-gateway"},
        "admin": {"address": _socket(a.admin)},
        "static_resources": {
            "listeners": [
                _listener(static, "public_grpc", a.public_grpc, grpc=True),
                _listener(static, "public_http", a.public_http, grpc=False),
            ],
            "clusters": [
                _static_cluster(SLOW_GRPC, a.control_grpc, http2=True, window=WINDOW_BYTES),
                _static_cluster(SLOW_HTTP, a.control_http, http2=False, window=WINDOW_BYTES),
                _static_cluster(CONTROL_GRPC, a.control_grpc, http2=True, window=WINDOW_BYTES),
                _static_cluster(CONTROL_HTTP, a.control_http, http2=False, window=WINDOW_BYTES),
            ],
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": CONTROL_GRPC}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ADS_SOURCE,
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": f"{T_EXT}.resource_monitors.downstream_connections.v3"
                        ".DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 50000,
                    },
                }
            ]
        },
        "layered_runtime": {"layers": [{"name": "admin", "admin_layer": {}}]},
    }


# -- clusters and endpoints (CDS, EDS) ------------------------------------------------------------------


def _model_cluster(static: StaticView, name: str, http2: bool) -> Json:
    return {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": ADS_SOURCE},
        "connect_timeout": "2s",
        "per_connection_buffer_limit_bytes": static.max_request_bytes,
        "typed_extension_protocol_options": _protocol_options(http2, WINDOW_BYTES),
        # Least outstanding requests over every host (not two random picks), weighted by capacity
        # and Triton's queue: the gateway's own routing signal (docs/routing.md).
        "lb_policy": "LEAST_REQUEST",
        "least_request_lb_config": {
            "choice_count": 100,
            "active_request_bias": {"default_value": 1.0, "runtime_key": "sonic.lb.bias"},
        },
        # The circuit breaker: consecutive failures eject a backend, longer each time.
        "outlier_detection": {
            "consecutive_5xx": static.circuit_failure_threshold,
            "consecutive_gateway_failure": static.circuit_failure_threshold,
            "consecutive_local_origin_failure": static.circuit_failure_threshold,
            "split_external_local_origin_errors": True,
            "interval": "1s",
            "base_ejection_time": _duration(static.circuit_base_ejection_s),
            "max_ejection_time": _duration(static.circuit_max_ejection_s),
            "max_ejection_percent": 100,
            # A backend's own error answer (INTERNAL, INVALID_ARGUMENT) means it is up: only
            # connection failures and 502/503/504 (gRPC UNAVAILABLE) count, as in the Python path.
            "enforcing_consecutive_5xx": 0,
            "enforcing_consecutive_gateway_failure": 100,
            "enforcing_consecutive_local_origin_failure": 100,
        },
        "circuit_breakers": {
            "thresholds": [
                {"max_requests": 100000, "max_pending_requests": 100000, "max_connections": 100000}
            ]
        },
        "ignore_health_on_host_removal": True,
    }


def render_clusters(static: StaticView, view: DataPlaneView) -> list[Json]:
    clusters: list[Json] = []
    for model in view.models:
        if model.grpc:
            clusters.append(_model_cluster(static, grpc_cluster(model), http2=True))
        if model.http:
            clusters.append(_model_cluster(static, http_cluster(model), http2=False))
    return clusters


def _lb_endpoint(e: Endpoint) -> Json:
    return {
        "endpoint": {"address": _socket((e.host, e.port)), "hostname": e.backend_id},
        "load_balancing_weight": max(1, e.weight),
        "metadata": {"filter_metadata": {"sonic": {"backend": e.backend_id, "facility": e.facility}}},
    }


def render_endpoints(static: StaticView, view: DataPlaneView) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for model in view.models:
        for name, endpoints in ((grpc_cluster(model), model.grpc), (http_cluster(model), model.http)):
            if endpoints:
                out[name] = {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [_lb_endpoint(e) for e in endpoints]}],
                }
    return out


# -- routes (RDS) -----------------------------------------------------------------------------------


def _retry_policy(grpc: bool) -> Json:
    # One more try, on another backend, only for what never reached one or got UNAVAILABLE.
    # "reset" covers a backend that died with the request in flight: inference is stateless, so it
    # is sent once more (never twice), as the Python path does.
    on = (
        "connect-failure,refused-stream,reset,unavailable"
        if grpc
        else "connect-failure,refused-stream,reset,retriable-status-codes"
    )
    policy: Json = {
        "retry_on": on,
        "num_retries": 1,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": f"{T_EXT}.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
            }
        ],
        # A dead backend has no requests in flight, so it looks least loaded: the predicate may need
        # several draws to pass it (with 3 backends, 5 draws still chose it again 1 time in 243).
        "host_selection_retry_max_attempts": 20,
    }
    if not grpc:
        policy["retriable_status_codes"] = [503]
    return policy


def fast_policy(model: ModelView) -> str:
    """A model's rules for the policy filter, as one string (cheaper for Envoy to hand to Lua than a
    table): ``,v1,v2,`` and, when only some groups may use it, ``|`` and the groups, percent-encoded
    and space-separated. A version holding ``,`` or ``|`` is left out: the Python path serves it."""
    versions = "," + "".join(f"{v}," for v in model.versions if not {",", "|"} & set(v))
    if model.groups is None:
        return versions
    return versions + "|" + " ".join(sorted(encode_name(g) for g in model.groups))


def _model_routes(static: StaticView, model: ModelView, grpc: bool) -> list[Json]:
    endpoints = model.grpc if grpc else model.http
    if not endpoints:
        return []
    header = {"name": "x-sonic-model", "string_match": {"exact": model.name}}
    fast = {"name": "x-sonic-fast", "present_match": True}
    path = (
        {"path": GRPC_INFER}
        if grpc
        else {"safe_regex": {"regex": "/v2/models/[^/]+(/versions/[^/]+)?/infer"}}
    )
    action: Json = {
        "cluster": grpc_cluster(model) if grpc else http_cluster(model),
        "timeout": _duration(static.default_timeout_s),
        "retry_policy": _retry_policy(grpc),
    }
    if static.rate_limited:
        action["rate_limits"] = _rate_limits()
    if grpc:
        # The caller's grpc-timeout is honoured up to the gateway's own ceiling.
        action["max_stream_duration"] = {"grpc_timeout_header_max": _duration(static.default_timeout_s)}
    policy = fast_policy(model)
    return [
        {
            "name": f"fast-{model.key}",
            "match": {**path, "headers": [header, fast]},
            "route": action,
            "request_headers_to_remove": ["x-sonic-model", "x-sonic-fast"],
            # What Envoy copies to be able to retry: a larger request is sent once, uncopied (the
            # body is already whole in Envoy's buffer, read by the policy filter, so this does not
            # limit what is served).
            "request_body_buffer_limit": static.retry_max_request_bytes,
            # The model's rules, read by the policy filter before it lets a request stay here.
            "metadata": {"filter_metadata": {POLICY_FILTER: {"policy": policy}}},
        }
    ]


T_ROUTE = "type.googleapis.com/envoy.config.route.v3.Route"
T_ROUTE_LIST = "type.googleapis.com/envoy.config.route.v3.RouteList"


def _virtual_host(fast: list[Json], model_names: list[str], other: list[Json]) -> Json:
    """Fast routes found by the model mark in one map lookup (not a scan of every model's route, which
    grew with the catalog), then the few others in order."""
    host: Json = {"name": "gateway", "domains": ["*"]}
    if not fast:
        host["routes"] = other
        return host
    host["matcher"] = {
        "matcher_tree": {
            "input": {
                "name": "x-sonic-model",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": "x-sonic-model",
                },
            },
            "exact_match_map": {
                "map": {
                    name: {"action": {"name": route["name"], "typed_config": {"@type": T_ROUTE, **route}}}
                    for name, route in zip(model_names, fast, strict=True)
                }
            },
        },
        "on_no_match": {
            "action": {"name": "others", "typed_config": {"@type": T_ROUTE_LIST, "routes": other}}
        },
    }
    return host


def render_routes(static: StaticView, view: DataPlaneView) -> dict[str, Json]:
    http_other: list[Json] = [
        # Loopback plumbing is never reachable from outside.
        {
            "match": {"prefix": "/internal/"},
            "direct_response": {"status": 404, "body": {"inline_string": '{"error": "not found"}'}},
        },
        {
            "match": {"prefix": "/metrics"},
            "direct_response": {
                "status": 404,
                "body": {"inline_string": '{"error": "metrics are served on the metrics port, not here"}'},
            },
        },
        {"name": "slow", "match": {"prefix": "/"}, "route": {"cluster": SLOW_HTTP, "timeout": "0s"}},
    ]
    grpc_other: list[Json] = [
        {"name": "slow", "match": {"prefix": "/"}, "route": {"cluster": SLOW_GRPC, "timeout": "0s"}}
    ]
    grpc_fast: list[Json] = []
    http_fast: list[Json] = []
    grpc_names: list[str] = []
    http_names: list[str] = []
    for model in view.models:
        for route in _model_routes(static, model, grpc=True):
            grpc_fast.append(route)
            grpc_names.append(model.name)
        for route in _model_routes(static, model, grpc=False):
            http_fast.append(route)
            http_names.append(model.name)

    def config(name: str, host: Json) -> Json:
        return {"name": name, "virtual_hosts": [host]}

    return {
        ROUTES_GRPC: config(ROUTES_GRPC, _virtual_host(grpc_fast, grpc_names, grpc_other)),
        ROUTES_HTTP: config(ROUTES_HTTP, _virtual_host(http_fast, http_names, http_other)),
    }
