"""The HAProxy configuration the benchmarks compare against, checked by haproxy itself when present."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.haproxy import HAPROXY_BIN, Frontend, render_config
from benchmarks.procs import delay_repo


def test_grpc_needs_h2_on_bind_and_servers() -> None:
    text = render_config([Frontend("lc", 9100, "grpc", "leastconn", ("127.0.0.1:9001", "127.0.0.1:9011"))])
    assert "mode http" in text
    assert "bind 127.0.0.1:9100 proto h2" in text
    assert "balance leastconn" in text
    assert "server s0 127.0.0.1:9001 proto h2" in text
    assert "server s1 127.0.0.1:9011 proto h2" in text
    assert "tune.h2.initial-window-size" in text


def test_http_frontend_is_plain_http1() -> None:
    text = render_config([Frontend("rest", 9200, "http", "roundrobin", ("127.0.0.1:9000",))])
    assert "bind 127.0.0.1:9200\n" in text
    assert "proto h2" not in text
    assert "balance roundrobin" in text


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        Frontend("x", 1, "grpc", "leastconn", ())
    with pytest.raises(ValueError, match="alphanumeric"):
        Frontend("bad name", 1, "grpc", "leastconn", ("127.0.0.1:1",))
    with pytest.raises(ValueError, match="at least one frontend"):
        render_config([])


@pytest.mark.skipif(
    shutil.which(HAPROXY_BIN) is None and not Path(HAPROXY_BIN).is_file(),
    reason="haproxy is not installed (Debian package haproxy)",
)
def test_haproxy_accepts_the_generated_config(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        render_config(
            [
                Frontend("rr", 19100, "grpc", "roundrobin", ("127.0.0.1:9001", "127.0.0.1:9011")),
                Frontend("rest", 19200, "http", "leastconn", ("127.0.0.1:9000",)),
            ]
        )
    )
    check = subprocess.run([HAPROXY_BIN, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_delay_repo_sets_the_service_time(tmp_path: Path) -> None:
    repo = delay_repo(tmp_path, "r", delay_ms=20, delay_us_per_item=0, model_name="delay_route")
    config = (repo / "delay_route" / "config.pbtxt").read_text()
    assert 'name: "delay_route"' in config
    assert 'string_value: "20"' in config
    assert 'string_value: "0"' in config
    assert "dynamic_batching" not in config  # one request per execution, like the paper's Fig. 7 left
    assert (repo / "delay_route" / "1" / "model.py").is_file()
    batched = delay_repo(tmp_path, "b", delay_ms=1, delay_us_per_item=5, dynamic_batching=True)
    assert "dynamic_batching { }" in (batched / "delay_fp32" / "config.pbtxt").read_text()
