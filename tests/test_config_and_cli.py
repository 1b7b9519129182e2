"""Settings precedence and the long-running CLI commands: they start, serve and stop cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from pydantic import BaseModel

from gateway.catalog import migrate
from gateway.catalog.db import make_engine
from gateway.config import (
    BackendSettings,
    CatalogSettings,
    ConfigError,
    ListenSettings,
    RoutingSettings,
    Settings,
    StateSettings,
    load_settings,
)
from tests.support.net import free_port
from tests.support.processes import assert_all_gone, descendants


def test_yaml_then_environment_then_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "listen: {grpc: '127.0.0.1:9101', http: '127.0.0.1:9100'}\n"
        "backends:\n  - {facility: lab, grpc: '127.0.0.1:9001', capacity: 2}\n"
    )
    monkeypatch.setenv("SONIC_GATEWAY_LISTEN__GRPC", "0.0.0.0:7001")
    settings = load_settings(config)
    assert settings.listen.grpc == "0.0.0.0:7001"  # environment beats the file
    assert settings.listen.http == "127.0.0.1:9100"
    assert settings.backends[0].capacity == 2
    assert load_settings(config, redis_url="redis://x").redis_url == "redis://x"


def test_bad_configuration_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text("backends:\n  - {facility: lab, grpc: 'no-port-here'}\n")
    with pytest.raises(ConfigError, match=r"backends\.0\.grpc.*host:port"):
        load_settings(config)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")


# One misspelt key per section, at the place a user would write it, with the key meant. Each must be
# refused by name rather than ignored: a silently dropped "health_interval" leaves the default in force.
MISSPELT = [
    ("lisen: {grpc: '127.0.0.1:8001'}\n", "lisen", "listen"),
    ("listen: {grcp: '127.0.0.1:8001'}\n", "listen.grcp", "grpc"),
    ("routing: {health_interval: 5}\n", "routing.health_interval", "health_interval_s"),
    ("state: {sync_interval: 0.5}\n", "state.sync_interval", "sync_interval_s"),
    ("catalog: {refresh: 1}\n", "catalog.refresh", "refresh_s"),
    (
        "backends:\n  - {facility: lab, grpc: '127.0.0.1:9001', capacty: 2}\n",
        "backends.0.capacty",
        "capacity",
    ),
    (
        "backends:\n  - {facility: lab, grpc: '127.0.0.1:9001', credentials: {kind: none, tokenfile: x}}\n",
        "backends.0.credentials.tokenfile",
        "token_file",
    ),
    ("limits: {defaults: {burst_s: 2}}\n", "limits.defaults", "default"),
    ("limits: {groups: {/dune: {burst: 2}}}\n", "limits.groups./dune.burst", "burst_s"),
    ("auth: {admin_scope: [x]}\n", "auth.admin_scope", "admin_scopes"),
    ("auth: {dev_issuer: {enable: true}}\n", "auth.dev_issuer.enable", "enabled"),
    (
        "auth: {issuers: [{issuer: 'https://i.example', audience: [a], jwks: 'https://i.example/k'}]}\n",
        "auth.issuers.0.jwks",
        "jwks_uri",
    ),
]


@pytest.mark.parametrize(("text", "key", "meant"), MISSPELT, ids=[key for _, key, _ in MISSPELT])
def test_a_misspelt_key_is_an_error_naming_it(tmp_path: Path, text: str, key: str, meant: str) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    problem, _, allowed = str(caught.value).removesuffix(")").partition(" (a typo? allowed here: ")
    assert problem == f"invalid configuration: {key}: unknown key"
    assert meant in allowed.split(", ")


def test_a_misspelt_nested_environment_key_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIC_GATEWAY_ROUTING__HEALTH_INTERVAL", "5")
    with pytest.raises(ConfigError, match=r"routing\.health_interval: unknown key"):
        load_settings(None)


def _sections(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    """Every settings model reachable from ``model`` through its fields (lists, dicts, optionals)."""
    yield model
    for field in model.model_fields.values():
        pending: list[object] = [field.annotation]
        while pending:
            kind = pending.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _sections(kind)
            pending.extend(typing.get_args(kind))


def test_every_settings_section_forbids_unknown_keys() -> None:
    # Sections added later (and their sub-sections) are held to the same rule as the ones above.
    sections = set(_sections(Settings))
    assert {ListenSettings, BackendSettings, RoutingSettings, StateSettings, CatalogSettings} <= sections
    lax = sorted(s.__name__ for s in sections if s.model_config.get("extra") != "forbid")
    assert lax == []


def _wait_for_exit(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.triton
def test_triton_command_serves_and_stops_on_sigterm_leaving_nothing(tmp_path: Path) -> None:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "triton", f"--grpc-port={grpc_port}",
         f"--http-port={http_port}", f"--metrics-port={metrics_port}",
         f"--log-file={tmp_path / 'triton.log'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert "Triton ready" in line, line
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            assert client.is_model_ready("emtrack_michel")
        children = descendants(proc.pid)
        assert children, "tritonserver should run as a child of the command"
        proc.send_signal(signal.SIGTERM)
        assert _wait_for_exit(proc, 30) == 0
        assert_all_gone(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_workers_and_stops_on_sigint(tmp_path: Path, workers: int) -> None:
    grpc_port, http_port = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(
        f"listen: {{grpc: '127.0.0.1:{grpc_port}', http: '127.0.0.1:{http_port}'}}\n"
        "auth: {enabled: false}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,  # serve creates its default SQLite catalog here, not in the working tree
    )
    try:
        deadline = time.monotonic() + 30
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
            while True:
                try:
                    assert client.is_server_live()
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
        if workers > 1:
            time.sleep(1.0)  # let every worker bind
            assert len(descendants(proc.pid)) >= workers
        proc.send_signal(signal.SIGINT)
        assert _wait_for_exit(proc, 30) == 0
        # the default catalog, created and migrated by serve itself, in serve's working directory
        engine = make_engine(f"sqlite:///{tmp_path / 'sonic-gateway.db'}")
        try:
            assert migrate.is_current(engine)
        finally:
            engine.dispose()
    finally:
        if proc.poll() is None:
            proc.kill()
