from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from gateway.app import Gateway
from gateway.catalog import migrate
from gateway.catalog.apply import ApplyError, apply_files, load_files
from gateway.catalog.db import make_engine
from gateway.cli import main
from gateway.frontends.http.app import create_http_app

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "facilities" / "local-demo.yaml"


def _transport(gateway: Gateway) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_http_app(gateway))


async def test_apply_is_idempotent_and_prunes(gateway: Gateway, tmp_path: Path) -> None:
    transport = _transport(gateway)
    report = await apply_files([DEMO], "http://gw", "admin", transport=transport)
    assert report.lines == [
        "facility local-a: created",
        "backend local-a grpc://127.0.0.1:9001: created",
    ]
    assert "local-a/127.0.0.1:9001" in gateway.registry.snapshot.backends
    again = await apply_files([DEMO], "http://gw", "admin", transport=transport)
    assert again.summary() == "0 created, 0 updated, 2 unchanged, 0 deleted"

    changed = tmp_path / "changed.yaml"
    changed.write_text(
        DEMO.read_text().replace("capacity: 1\n", "capacity: 3\n").replace('"this machine"', '"here"')
        + """
  - name: other
    backends:
      - {address: "10.0.0.9:8001"}
"""
    )
    report = await apply_files([changed], "http://gw", "admin", transport=transport)
    assert report.counts == {"updated": 2, "created": 2}
    assert gateway.registry.snapshot.backends["local-a/127.0.0.1:9001"].capacity == 3

    only_other = tmp_path / "other.yaml"
    only_other.write_text("facilities:\n  - name: other\n    backends: []\n")
    report = await apply_files([only_other], "http://gw", "admin", prune=True, transport=transport)
    assert report.lines == [
        "facility other: unchanged",
        "backend other grpc://10.0.0.9:8001: deleted",
        "facility local-a: deleted",
    ]
    assert gateway.registry.snapshot.backends == {}


async def test_apply_needs_an_admin_token(gateway: Gateway) -> None:
    with pytest.raises(ApplyError, match="401"):
        await apply_files([DEMO], "http://gw", None, transport=_transport(gateway))
    with pytest.raises(ApplyError, match="403"):
        await apply_files([DEMO], "http://gw", "reader", transport=_transport(gateway))


def test_commented_examples_are_valid(tmp_path: Path) -> None:
    lines = DEMO.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- Examples"))
    examples = [line[3:] if line.startswith("#  ") else "" for line in lines[start + 1 :]]
    file = tmp_path / "examples.yaml"
    file.write_text("facilities:\n" + "\n".join(examples))
    specs = load_files([file])
    assert [s.name for s in specs] == ["lab-gpu-cluster", "hpc-centre"]
    assert specs[1].enabled is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("facilities: [{name: 'bad name'}]", "facilities.0.name"),
        ("facilities: [{name: a, backends: [{address: nope}]}]", "facilities.0.backends.0.address"),
        ("facilities: [{name: a}, {name: a}]", "more than once"),
        ("facilities: [", "not valid YAML"),
        ("nodes: []", "nodes"),
    ],
)
def test_bad_files_say_where(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "f.yaml"
    file.write_text(text)
    with pytest.raises(ApplyError, match=message):
        load_files([file])


def test_cli_db_upgrade_and_apply_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"database_url: '{url}'\n")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert "0001_catalog" in capsys.readouterr().out
    engine = make_engine(url)
    assert "facility" in inspect(engine).get_table_names()
    assert migrate.is_current(engine)
    engine.dispose()
    assert main(["db", "upgrade", "--database-url", "sqlite:////nonexistent-dir/x.db"]) == 2
    assert main(["apply", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err
