"""The app factory records usage in the catalog database when one is configured, in memory otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.catalog.recorder import BatchedUsageRecorder
from gateway.config import load_settings
from gateway.core.recording import InMemoryRecorder


def _gateway(**values: object) -> Gateway:
    return Gateway(load_settings(None, **values), metrics_registry=CollectorRegistry())


def test_a_configured_database_gets_the_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = _gateway(database_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(gw.recorder, BatchedUsageRecorder)
    assert gw.catalog.recorder is gw.recorder  # started, flushed and stopped with the catalog

    monkeypatch.setenv("SONIC_GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(_gateway().recorder, BatchedUsageRecorder)

    config = tmp_path / "gateway.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'c.db'}\n")
    monkeypatch.delenv("SONIC_GATEWAY_DATABASE_URL")
    gw = Gateway(load_settings(config), metrics_registry=CollectorRegistry())
    assert isinstance(gw.recorder, BatchedUsageRecorder)


def test_no_database_configured_keeps_usage_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONIC_GATEWAY_DATABASE_URL", raising=False)
    gw = _gateway()
    assert isinstance(gw.recorder, InMemoryRecorder)
    assert gw.catalog.recorder is None


def test_an_explicit_recorder_wins(tmp_path: Path) -> None:
    mine = InMemoryRecorder()
    gw = Gateway(
        load_settings(None, database_url=f"sqlite:///{tmp_path / 'a.db'}"),
        recorder=mine,
        metrics_registry=CollectorRegistry(),
    )
    assert gw.recorder is mine
    assert gw.catalog.recorder is None
