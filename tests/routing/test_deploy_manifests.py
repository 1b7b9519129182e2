"""docs/deploy/: every manifest validates against the Kubernetes schemas, offline; the config loads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
KUBERNETES_VERSION = "1.30.0"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def _validate(doc: dict[str, Any]) -> None:
    # strict: unknown fields (typos) are errors too.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_deployment_has_every_piece() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _documents()}
    assert {
        ("Deployment", "sonic-gateway"),
        ("Service", "sonic-gateway"),
        ("Deployment", "redis"),
        ("StatefulSet", "postgres"),
        ("Job", "sonic-gateway-migrate"),
        ("Deployment", "triton-facility-a"),
        ("Deployment", "triton-facility-b"),
        ("HorizontalPodAutoscaler", "sonic-gateway"),
    } <= kinds
    job = next(doc for _, doc in _documents() if doc["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["sonic-gateway", "db", "upgrade"]


@pytest.mark.parametrize(("name", "doc"), _documents(), ids=[n for n, _ in _documents()])
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    _validate(doc)


def test_an_invalid_manifest_is_caught() -> None:
    gateway = next(doc for name, doc in _documents() if name.endswith("Deployment/sonic-gateway"))
    wrong_type = copy.deepcopy(gateway)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="'three' is not of type"):
        _validate(wrong_type)
    typo = copy.deepcopy(gateway)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(typo)


def test_the_gateway_config_in_the_configmap_is_a_valid_gateway_config(tmp_path: Path) -> None:
    config = next(doc for name, doc in _documents() if name.endswith("ConfigMap/sonic-gateway-config"))
    path = tmp_path / "gateway.yaml"
    path.write_text(config["data"]["gateway.yaml"])
    settings = load_settings(path)
    assert settings.redis_url == "redis://redis.sonic.svc:6379/0"
    assert [b.facility for b in settings.backends] == ["facility-a", "facility-b"]
