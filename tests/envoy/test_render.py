"""The control plane's pure half: registry snapshot -> view -> Envoy resources (compared exactly)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format

from gateway.envoy.ads import AdsPublisher, AdsServer, _endpoints_directly, _message
from gateway.envoy.binary import envoy_binary
from gateway.envoy.controlplane import build_view
from gateway.envoy.render import (
    SLOW_GRPC,
    T_ENDPOINTS,
    encode_name,
    fast_policy,
    grpc_cluster,
    http_cluster,
    render_bootstrap,
    render_clusters,
    render_endpoints,
    render_routes,
)
from gateway.envoy.view import Addresses, ModelView, StaticView
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry


def _registry() -> Registry:
    a = Backend("lab/10.0.0.1:8001", "lab", "10.0.0.1:8001", "10.0.0.1:8000", capacity=2.0)
    b = Backend("hpc/10.0.0.2:8001", "hpc", "10.0.0.2:8001", None)
    registry = Registry([a, b])
    registry.update_health(a.id, True, {"cnn": frozenset({"1", "2"}), "tiny": frozenset({"1"})})
    registry.update_health(b.id, True, {"cnn": frozenset({"2"})})
    return registry


def _static(tmp: Path) -> StaticView:
    return StaticView(
        addresses=Addresses(
            ("0.0.0.0", 8001), ("0.0.0.0", 8000), ("127.0.0.1", 0), ("127.0.0.1", 9), ("127.0.0.1", 10)
        ),
    )


def test_view_holds_healthy_consistent_backends_weighted_by_capacity_and_queue() -> None:
    registry = _registry()
    queues = {"lab/10.0.0.1:8001": {"cnn": 3}}
    view = build_view(
        registry.snapshot,
        pending=lambda backend: queues.get(backend, {}),
        model_groups=lambda model: {"/cms", "/dune"} if model == "cnn" else None,
    )
    cnn, tiny = view.models
    assert cnn.name == "cnn"
    assert tiny.name == "tiny"
    assert [(e.facility, e.host, e.port, e.weight) for e in cnn.grpc] == [
        ("lab", "10.0.0.1", 8001, 50),  # capacity 2 -> 200, queue 3 -> /4
        ("hpc", "10.0.0.2", 8001, 100),
    ]
    assert [(e.facility, e.port) for e in cnn.http] == [("lab", 8000)]  # hpc has no HTTP endpoint
    assert cnn.versions == ("2",)  # only the version every endpoint serves
    assert cnn.groups == ("/cms", "/dune")
    assert tiny.groups is None
    assert tiny.versions == ("1",)

    # The consistency check takes lab out for cnn only; a dead backend leaves every model.
    registry.set_excluded({("lab/10.0.0.1:8001", "cnn")})
    view = build_view(registry.snapshot, pending=lambda b: {}, model_groups=lambda m: None)
    assert [e.facility for e in view.models[0].grpc] == ["hpc"]
    registry.mark_unreachable("hpc/10.0.0.2:8001", "refused")
    view = build_view(registry.snapshot, pending=lambda b: {}, model_groups=lambda m: None)
    assert [m.name for m in view.models] == ["tiny"]


def test_backends_with_outbound_credentials_keep_their_models_on_the_python_path() -> None:
    view = build_view(
        _registry().snapshot,
        pending=lambda b: {},
        model_groups=lambda m: None,
        credentialed={"hpc/10.0.0.2:8001"},
    )
    assert [m.name for m in view.models] == ["tiny"]


def test_rendered_routes_clusters_and_endpoints(tmp_path: Path) -> None:
    static = _static(tmp_path)
    view = build_view(
        _registry().snapshot, pending=lambda b: {}, model_groups=lambda m: {"/a b"} if m == "cnn" else None
    )
    cnn = view.models[0]
    clusters = {c["name"]: c for c in render_clusters(static, view)}
    assert set(clusters) == {
        grpc_cluster(cnn),
        http_cluster(cnn),
        grpc_cluster(view.models[1]),
        http_cluster(view.models[1]),
    }
    assert clusters[grpc_cluster(cnn)]["lb_policy"] == "LEAST_REQUEST"
    endpoints = render_endpoints(static, view)[grpc_cluster(cnn)]["endpoints"][0]["lb_endpoints"]
    assert [
        (e["endpoint"]["address"]["socket_address"]["address"], e["load_balancing_weight"]) for e in endpoints
    ] == [
        ("10.0.0.1", 200),
        ("10.0.0.2", 100),
    ]
    host = render_routes(static, view)["sonic_grpc"]["virtual_hosts"][0]
    # The model mark finds its fast route in one map lookup, whatever the catalog's size.
    tree = host["matcher"]["matcher_tree"]
    assert tree["input"]["typed_config"]["header_name"] == "x-sonic-model"
    by_model = {m: e["action"]["typed_config"] for m, e in tree["exact_match_map"]["map"].items()}
    assert sorted(by_model) == ["cnn", "tiny"]
    fast = by_model["cnn"]
    assert fast["route"]["cluster"] == grpc_cluster(cnn)
    assert {h["name"] for h in fast["match"]["headers"]} == {"x-sonic-model", "x-sonic-fast"}
    retry = fast["route"]["retry_policy"]
    assert retry["num_retries"] == 1  # once more, never twice
    assert set(retry["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset", "unavailable"}
    assert fast["request_body_buffer_limit"] == 4 * 1024 * 1024  # larger requests are not copied to retry
    outlier = clusters[grpc_cluster(cnn)]["outlier_detection"]
    assert outlier["enforcing_consecutive_5xx"] == 0  # an INTERNAL answer means the backend is up
    assert outlier["enforcing_consecutive_gateway_failure"] == 100
    # The model's rules, one string for the policy filter: versions, then the groups that may use it.
    assert fast["metadata"]["filter_metadata"]["sonic.policy"]["policy"] == ",2,|" + encode_name("/a b")
    assert by_model["tiny"]["metadata"]["filter_metadata"]["sonic.policy"]["policy"] == ",1,"
    # Everything else: the Python path.
    assert host["matcher"]["on_no_match"]["action"]["typed_config"]["routes"] == [
        {"name": "slow", "match": {"prefix": "/"}, "route": {"cluster": SLOW_GRPC, "timeout": "0s"}}
    ]
    # Rate limits configured: the fast routes ask the rate-limit service with the caller's entries.
    limited = render_routes(dataclasses.replace(static, rate_limited=True), view)
    tree = limited["sonic_grpc"]["virtual_hosts"][0]["matcher"]["matcher_tree"]
    limited_fast = tree["exact_match_map"]["map"]["cnn"]["action"]["typed_config"]
    entries = [a["metadata"]["descriptor_key"] for a in limited_fast["route"]["rate_limits"][0]["actions"]]
    assert entries == ["subject", "issuer", "rl_groups", "rl_inferences", "rl_bytes"]
    assert "rate_limits" not in fast["route"]


def test_equal_views_push_nothing_twice(tmp_path: Path) -> None:
    static = _static(tmp_path)
    publisher = AdsPublisher(static, AdsServer())
    view = build_view(_registry().snapshot, pending=lambda b: {}, model_groups=lambda m: None)
    first = publisher.publish(view)  # every resource parses as Envoy's own message (ParseDict)
    assert first.resources_changed == 4 + 4 + 2  # clusters, endpoints (cnn, tiny: gRPC, HTTP), routes
    assert publisher.publish(view).resources_changed == 0
    queued = build_view(_registry().snapshot, pending=lambda b: {"cnn": 1}, model_groups=lambda m: None)
    assert publisher.publish(queued).resources_changed == 2  # only cnn's two endpoint sets


def test_endpoints_built_directly_equal_what_protobuf_parses(tmp_path: Path) -> None:
    """The fast converter for endpoint sets (json_format.ParseDict was most of a big push) builds the
    same message ParseDict does, and leaves any other shape to ParseDict."""
    view = build_view(_registry().snapshot, pending=lambda b: {"cnn": 2}, model_groups=lambda m: None)
    rendered = render_endpoints(_static(tmp_path), view)
    assert rendered
    for body in rendered.values():
        parsed = json_format.ParseDict(body, endpoint_pb2.ClusterLoadAssignment())
        assert _endpoints_directly(body) == parsed
        assert _message(T_ENDPOINTS, body) == parsed
    body = next(iter(rendered.values()))
    odd = {**body, "policy": {"overprovisioning_factor": 140}}
    assert _endpoints_directly(odd) is None
    assert _message(T_ENDPOINTS, odd) == json_format.ParseDict(odd, endpoint_pb2.ClusterLoadAssignment())


def test_envoy_accepts_the_rendered_configuration(tmp_path: Path) -> None:
    try:
        binary = envoy_binary()
    except Exception as exc:
        pytest.skip(str(exc))
    static = dataclasses.replace(_static(tmp_path), rate_limited=True)  # every filter we render
    AdsPublisher(static, AdsServer()).publish(
        build_view(_registry().snapshot, pending=lambda b: {}, model_groups=lambda m: None)
    )
    bootstrap = tmp_path / "bootstrap.json"
    bootstrap.write_text(json.dumps(render_bootstrap(static)))
    result = subprocess.run(
        [str(binary), "--mode", "validate", "-c", str(bootstrap), "--disable-hot-restart", "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ModelView("x", (), (), None, ()).key == ModelView("x", (), (), ("g",), ("1",)).key  # name-only id


async def test_the_sync_loop_builds_a_view_only_when_its_inputs_changed(tmp_path: Path) -> None:
    from gateway.config import load_settings
    from gateway.envoy.controlplane import EnvoyDataPlane

    registry = _registry()
    queues: dict[str, dict[str, int]] = {}
    plane = EnvoyDataPlane(
        load_settings(None, envoy={"work_dir": str(tmp_path)}),
        control_grpc=("127.0.0.1", 1),
        control_http=("127.0.0.1", 2),
        snapshot=lambda: registry.snapshot,
        pending=lambda backend: queues.get(backend, {}),
        model_groups=lambda model: None,
        credentialed=(),
        auth_enabled=False,
        ads=AdsServer(),
        usage=SimpleNamespace(line=lambda line: None, flush=lambda: None),
    )
    built = 0
    real_view = plane.current_view

    def counting_view() -> Any:
        nonlocal built
        built += 1
        return real_view()

    plane.current_view = counting_view  # type: ignore[method-assign]
    await plane._sync_once()
    await plane._sync_once()  # nothing changed: no build (a 50x200 view costs ~0.2 s)
    assert built == 1
    queues["lab/10.0.0.1:8001"] = {"cnn": 2}
    await plane._sync_once()
    registry.mark_unreachable("hpc/10.0.0.2:8001", "refused")
    await plane._sync_once()
    assert built == 3
    assert [e.facility for e in plane.view.models[0].grpc] == ["lab"]


def test_host_names_are_resolved_once_per_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.envoy import controlplane

    lookups: list[str] = []

    def fake_resolve(host: str) -> str:
        lookups.append(host)
        return f"10.0.0.{len(lookups)}"

    monkeypatch.setattr(controlplane, "resolve_host", fake_resolve)
    now = [100.0]
    resolver = controlplane.HostResolver(ttl_s=30, clock=lambda: now[0])
    assert resolver("triton.example.org") == "10.0.0.1"
    now[0] += 29.9
    assert resolver("triton.example.org") == "10.0.0.1"  # cached: no second lookup
    now[0] += 0.1
    assert resolver("triton.example.org") == "10.0.0.2"  # expired: looked up again
    assert lookups == ["triton.example.org", "triton.example.org"]


def test_a_models_rules_are_one_string_that_cannot_be_read_across_fields() -> None:
    def model(versions: tuple[str, ...], groups: tuple[str, ...] | None) -> ModelView:
        return ModelView("cnn", (), (), groups, versions)

    assert fast_policy(model(("1", "10"), None)) == ",1,10,"
    # Versions that would blur the separators are left to the Python path.
    assert fast_policy(model(("1", "2,3", "4|5"), None)) == ",1,"
    assert fast_policy(model((), ("/cms", "a b|c"))) == ",|" + "%2Fcms a%20b%7Cc"
    assert fast_policy(model(("1",), ())) == ",1,|"  # restricted to no group at all: nobody

