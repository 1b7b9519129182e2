from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from gateway.app import Gateway
from gateway.catalog import migrate
from gateway.catalog import models as m
from gateway.catalog.apply import ApplyError, apply_files, load_files
from gateway.catalog.db import make_engine
from gateway.cli import main
from gateway.frontends.http.app import create_http_app
from tests.catalog.support import ADMIN

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "facilities" / "local-demo.yaml"


def _transport(gateway: Gateway) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=create_http_app(gateway))


DEMO_MODELS = ("emtrack_michel", "identity_fp32", "delay_fp32")
DEMO_BACKEND = "local-a grpc://127.0.0.1:9001"


async def test_apply_is_idempotent_and_prunes(gateway: Gateway, tmp_path: Path) -> None:
    transport = _transport(gateway)
    report = await apply_files([DEMO], "http://gw", "admin", transport=transport)
    assert report.lines == [
        *(
            line
            for name in DEMO_MODELS
            for line in (f"model {name}: created", f"model version {name}:1: created")
        ),
        "facility local-a: created",
        f"backend {DEMO_BACKEND}: created",
        *(f"deployment {name}:1 on {DEMO_BACKEND}: created" for name in DEMO_MODELS),
    ]
    assert "local-a/127.0.0.1:9001" in gateway.registry.snapshot.backends
    again = await apply_files([DEMO], "http://gw", "admin", transport=transport)
    assert again.summary() == "0 created, 0 updated, 11 unchanged, 0 deleted"

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
    assert report.counts == {"updated": 2, "created": 2, "unchanged": 9}
    assert "facility local-a: updated (site)" in report.lines
    assert f"backend {DEMO_BACKEND}: updated (capacity)" in report.lines
    assert gateway.registry.snapshot.backends["local-a/127.0.0.1:9001"].capacity == 3

    only_other = tmp_path / "other.yaml"
    only_other.write_text("facilities:\n  - name: other\n    backends: []\n")
    report = await apply_files([only_other], "http://gw", "admin", prune=True, transport=transport)
    assert report.lines == [
        "facility other: unchanged",
        "backend other grpc://10.0.0.9:8001: deleted",
        "facility local-a: deleted",
        *(f"model {name}: deleted (with versions 1)" for name in DEMO_MODELS),
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
    # Example lines are commented out with a bare '#' (YAML indentation follows); prose is '# Word'.
    examples = [line[1:] for line in lines[start + 1 :] if not re.match(r"# \S", line)]
    file = tmp_path / "examples.yaml"
    file.write_text("\n".join(examples))
    declared = load_files([file])
    assert [f.name for f in declared.facilities] == ["lab-gpu-cluster", "hpc-centre"]
    assert declared.facilities[1].enabled is False
    [model] = declared.models
    assert model.versions[0].version == "3"  # written as a number
    assert model.versions[0].training_dataset == declared.datasets[0].name
    assert {d.key for _, _, d in declared.deployments()} == {(model.name, "3")}


def test_demo_checksums_are_the_artifacts() -> None:
    """The demo's sha256 is that of the version directory (the recipe in the file's header)."""
    for model in load_files([DEMO]).models:
        directory = REPO / "model_repository" / model.name / "1"
        files = sorted(
            "./" + p.relative_to(directory).as_posix()
            for p in directory.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        listing = "".join(f"{hashlib.sha256((directory / f).read_bytes()).hexdigest()}  {f}\n" for f in files)
        actual = hashlib.sha256(listing.encode()).hexdigest()
        assert model.versions[0].sha256 == actual, (
            f"{model.name}: model_repository changed; put sha256 {actual} in facilities/local-demo.yaml"
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("facilities: [{name: 'bad name'}]", "facilities.0.name"),
        ("facilities: [{name: a, backends: [{address: nope}]}]", "facilities.0.backends.0.address"),
        ("facilities: [{name: a}, {name: a}]", "more than once"),
        ("facilities: [", "not valid YAML"),
        ("nodes: []", "nodes"),
        (
            "models: [{name: m, versions: [{version: 1, max_batch_size: -1}]}]",
            "models.0.versions.0.max_batch_size",
        ),
        ("models: [{name: m, versions: [{version: 1, signature: x}]}]", "models.0.versions.0.signature"),
        ("models: [{name: m, versions: [{version: 1, sha256: abc}]}]", "models.0.versions.0.sha256"),
        (
            "models: [{name: m, versions: [{version: 1}, {version: '1'}]}]",
            r"versions.1 \(m:1\): version 1 listed",
        ),
        (
            "facilities: [{name: a, backends: [{address: 'h:1', deployments: [{model: m}]}]}]",
            "facilities.0.backends.0.deployments.0.version",
        ),
        (
            "facilities: [{name: a, backends: [{address: 'http://h:8001'}]}]",
            r"facilities.0.backends.0.address \(facility a, backend http://h:8001\): .* has a scheme",
        ),
        (
            "facilities: [{name: a, backends: [{address: 'a b c:1'}]}]",
            r"backends.0.address \(facility a, backend a b c:1\): .*not a host name",
        ),
        ("facilities: [{name: a, backends: [{address: 'h:0'}]}]", r"backend h:0\): .*port must be 1..65535"),
        (
            "facilities: [{name: a, backends: [{facility: b, address: 'h:1'}]}]",
            r"facilities.0 \(facility a\): .*names facility 'b' but is listed under facility 'a'",
        ),
        (
            "facilities: [{name: a, backends: [{address: 'h:1', capacity: true}]}]",
            r"facilities.0.backends.0.capacity \(facility a, backend h:1\)",
        ),
        (
            "facilities:\n  - name: a\n    site: x\n    name: b\n",
            r"not valid YAML: key 'name' given twice \(first on line 2\) \(line 4, column 5\)",
        ),
        (
            "facilities: [{name: a, name: b}]",
            r"not valid YAML: key 'name' given twice \(first on line 1\) \(line 1, column 24\)",
        ),
        (
            "models: [{name: m, versions: [{version: 1, inputs: [{name: x, datatype: FLOAT99, shape: [1]}]}]}]",  # noqa: E501
            r"models.0.versions.0.inputs.0.datatype \(model m, version 1\): .*unknown datatype 'FLOAT99'",
        ),
    ],
)
def test_bad_files_say_where(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "f.yaml"
    file.write_text(text)
    with pytest.raises(ApplyError, match=message) as err:
        load_files([file])
    assert str(err.value).startswith(str(file))
    assert "\n" not in str(err.value)  # one line


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    file = tmp_path / "f.yaml"
    file.write_text(
        "facilities:\n"
        "  - name: a\n"
        "    backends:\n"
        "      - &gpu {address: 'h:1', accelerator: T4}\n"
        "      - {<<: *gpu, address: 'h:2'}\n"
    )
    [facility] = load_files([file]).facilities
    assert [(b.address, b.accelerator, b.facility) for b in facility.backends] == [
        ("h:1", "T4", "a"),
        ("h:2", "T4", "a"),
    ]


def test_cli_db_upgrade_and_apply_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"database_url: '{url}'\n")
    assert main(["db", "upgrade", "--config", str(config)]) == 0
    assert migrate.head_revision() in capsys.readouterr().out
    engine = make_engine(url)
    assert "facility" in inspect(engine).get_table_names()
    assert migrate.is_current(engine)
    engine.dispose()
    assert main(["db", "upgrade", "--database-url", "sqlite:////nonexistent-dir/x.db"]) == 2
    assert main(["apply", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


CATALOG = """
datasets:
  - name: "protodune-sp:np04_reco_run5387"
    experiment: protodune-sp
    n_events: 1000
models:
  - name: m
    description: "a test model"
    versions:
      - version: 1
        platform: python
        max_batch_size: 8
        inputs: [{name: x, datatype: FP32, shape: [4]}]
        outputs: [{name: y, datatype: FP32, shape: [1]}]
        sha256: "%s"
        allowed_groups: ["/dune/reco"]
        training_dataset: "protodune-sp:np04_reco_run5387"
        tags: [t1]
      - version: 2
      - version: 3
facilities:
  - name: lab
    backends:
      - address: "10.0.0.5:8001"
        deployments: [{model: m, version: 1}, {model: m, version: 2}]
""" % ("ab" * 32)


def _write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    file = tmp_path / name
    file.write_text(text)
    return file


async def test_models_versions_and_deployments_round_trip(gateway: Gateway, tmp_path: Path) -> None:
    transport = _transport(gateway)
    file = _write(tmp_path, CATALOG)
    report = await apply_files([file], "http://gw", "admin", transport=transport)
    assert report.lines == [
        "dataset protodune-sp:np04_reco_run5387: created",
        "model m: created",
        "model version m:1: created",
        "model version m:2: created",
        "model version m:3: created",
        "facility lab: created",
        "backend lab grpc://10.0.0.5:8001: created",
        "deployment m:1 on lab grpc://10.0.0.5:8001: created",
        "deployment m:2 on lab grpc://10.0.0.5:8001: created",
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=ADMIN) as http:
        [model] = (await http.get("/api/v1/models", params={"name": "m"})).json()["items"]
        assert model["description"] == "a test model"
        versions = (await http.get(f"/api/v1/models/{model['id']}/versions")).json()["items"]
        v1 = versions[0]
        assert (v1["version"], v1["platform"], v1["max_batch_size"], v1["sha256"]) == (
            "1",
            "python",
            8,
            "ab" * 32,
        )
        assert v1["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [4]}]
        assert (v1["allowed_groups"], v1["training_dataset"], v1["tags"]) == (
            ["/dune/reco"],
            "protodune-sp:np04_reco_run5387",
            ["t1"],
        )
        assert v1["created_by"]  # the admin who applied
        deployments = (await http.get("/api/v1/deployments", params={"facility": "lab"})).json()["items"]
        assert sorted((d["model"], d["version"], d["state"]) for d in deployments) == [
            ("m", "1", "registered"),
            ("m", "2", "registered"),
        ]
        [dataset] = (await http.get("/api/v1/datasets")).json()["items"]
        assert dataset["n_events"] == 1000

        again = await apply_files([file], "http://gw", "admin", transport=transport)
        assert again.summary() == "0 created, 0 updated, 9 unchanged, 0 deleted"

        # An edited signature (and tags) is an update of that version alone, with the fields named.
        edited = CATALOG.replace("shape: [4]", "shape: [5]").replace("tags: [t1]", "tags: [t1, t2]")
        report = await apply_files([_write(tmp_path, edited)], "http://gw", "admin", transport=transport)
        assert report.counts == {"updated": 1, "unchanged": 8}
        assert "model version m:1: updated (inputs, tags)" in report.lines
        v1 = (await http.get(f"/api/v1/model-versions/{v1['id']}")).json()
        assert (v1["inputs"][0]["shape"], v1["tags"]) == ([5], ["t1", "t2"])

        # The gateway's own observation (a version the backend serves unregistered): prune keeps it.
        await http.post("/api/v1/backends", json={"facility": "lab", "address": "10.0.0.6:8001"})
        backend_id = deployments[0]["backend_id"]
        observed = {"backend_id": backend_id, "model": "m", "version": "3", "state": "observed"}
        assert (await http.post("/api/v1/deployments", json=observed)).status_code == 201

        # Prune: version 2's deployment is no longer named, nor is version 2, nor the extra backend.
        pruned = edited.replace(", {model: m, version: 2}", "").replace("      - version: 2\n", "")
        report = await apply_files(
            [_write(tmp_path, pruned)], "http://gw", "admin", prune=True, transport=transport
        )
        assert [line for line in report.lines if "unchanged" not in line] == [
            "deployment m:2 on lab grpc://10.0.0.5:8001: deleted",
            "backend lab grpc://10.0.0.6:8001: deleted",
            "model version m:2: deleted",
        ]
        deployments = (await http.get("/api/v1/deployments", params={"facility": "lab"})).json()["items"]
        assert sorted((d["model"], d["version"], d["state"]) for d in deployments) == [
            ("m", "1", "registered"),
            ("m", "3", "observed"),
        ]


async def test_prune_keeps_what_provenance_names(gateway: Gateway, tmp_path: Path) -> None:
    """The API would delete a version that usage names (usage rows hold names), losing what it was;
    pruning keeps it and says so."""
    transport = _transport(gateway)
    await apply_files([_write(tmp_path, CATALOG)], "http://gw", "admin", transport=transport)
    now = dt.datetime.now(dt.UTC)
    with gateway.catalog.session() as session:
        session.add(
            m.Usage(
                job_id="reco-42",
                dataset="protodune-sp:np04_reco_run5387",
                model="m",
                version="1",
                facility="lab",
                backend="lab/10.0.0.5:8001",
                subject="alice",
                n_requests=1,
                n_inferences=4,
                first_seen=now,
                last_seen=now,
            )
        )
        session.commit()
    empty = _write(tmp_path, "facilities: []\n", "empty.yaml")
    report = await apply_files([empty], "http://gw", "admin", prune=True, transport=transport)
    assert report.lines[0] == "facility lab: deleted"
    assert report.lines[1].startswith("model version m:1: kept (1 provenance record(s) name it;")
    assert "DELETE /api/v1/model-versions/" in report.lines[1]
    assert report.lines[2:] == [
        "model version m:2: deleted",
        "model version m:3: deleted",
        "model m: kept (1 of its versions kept for provenance)",
        "dataset protodune-sp:np04_reco_run5387: kept (the training dataset of model version m:1)",
    ]
    assert report.summary() == "0 created, 0 updated, 0 unchanged, 3 deleted, 3 kept"
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=ADMIN) as http:
        [model] = (await http.get("/api/v1/models")).json()["items"]
        assert model["versions"] == ["1"]
        [version] = (await http.get(f"/api/v1/models/{model['id']}/versions")).json()["items"]
        assert (version["sha256"], version["training_dataset"]) == (
            "ab" * 32,
            "protodune-sp:np04_reco_run5387",
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("version: 2}]", "version: 4}]"),
            r"catalog.yaml: facilities.0.backends.0.deployments.1 \(m:4\): no version '4' of model 'm'",
        ),
        (
            ('training_dataset: "protodune-sp:np04_reco_run5387"', "training_dataset: nope"),
            r"catalog.yaml: models.0.versions.0 \(m:1\): training_dataset 'nope' is neither",
        ),
    ],
)
async def test_bad_references_change_nothing(
    gateway: Gateway, tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = CATALOG.replace(*change)
    assert text != CATALOG
    transport = _transport(gateway)
    with pytest.raises(ApplyError, match=message):
        await apply_files([_write(tmp_path, text)], "http://gw", "admin", transport=transport)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", headers=ADMIN) as http:
        for path in ("/api/v1/facilities", "/api/v1/models", "/api/v1/datasets"):
            assert (await http.get(path)).json()["total"] == 0


async def test_deployments_may_name_versions_already_in_the_catalog(gateway: Gateway, tmp_path: Path) -> None:
    transport = _transport(gateway)
    models_only = CATALOG.split("facilities:")[0]
    facility_only = "facilities:" + CATALOG.split("facilities:")[1]
    await apply_files(
        [_write(tmp_path, models_only, "models.yaml")], "http://gw", "admin", transport=transport
    )
    report = await apply_files([_write(tmp_path, facility_only)], "http://gw", "admin", transport=transport)
    assert report.counts == {"created": 4}


def test_cli_reports_a_bad_entry_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = _write(tmp_path, "models: [{name: m, versions: [{version: 1, max_batch_size: x}]}]")
    assert main(["apply", str(file), "--url", "http://127.0.0.1:9"]) == 1
    assert f"{file}: models.0.versions.0.max_batch_size" in capsys.readouterr().err
