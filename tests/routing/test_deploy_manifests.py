"""docs/deploy/: every manifest validates against the Kubernetes schemas, offline; the config loads."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import ENV_PREFIX, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "deploy"
KUBERNETES_VERSION = "1.30.0"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def _doc(suffix: str) -> dict[str, Any]:
    return next(doc for name, doc in _documents() if name.endswith(suffix))


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
    gateway = _doc("Deployment/sonic-gateway")
    wrong_type = copy.deepcopy(gateway)
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError, match="'three' is not of type"):
        _validate(wrong_type)
    typo = copy.deepcopy(gateway)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(typo)


def test_the_gateway_config_in_the_configmap_is_a_valid_gateway_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _shipped_settings(tmp_path, monkeypatch)
    assert settings.redis_url == "redis://redis.sonic.svc:6379/0"
    assert [b.facility for b in settings.backends] == ["facility-a", "facility-b"]


def _shipped_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ConfigMap's gateway.yaml as the pod reads it (without the test suite's overrides)."""
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    path = tmp_path / "gateway.yaml"
    path.write_text(_doc("ConfigMap/sonic-gateway-config")["data"]["gateway.yaml"])
    return load_settings(path)


def test_the_gateway_pod_is_scraped_on_its_metrics_port_and_only_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _shipped_settings(tmp_path, monkeypatch)
    assert settings.envoy.enabled
    metrics_port = int(settings.listen.metrics.rpartition(":")[2])
    pod = _doc("Deployment/sonic-gateway")["spec"]["template"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": metrics_port}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    # The Service is public: the metrics port is not in it.
    service = _doc("Service/sonic-gateway")
    assert {p["port"] for p in service["spec"]["ports"]} == {8000, 8001}


def test_the_pod_outlives_the_drain_and_readiness_is_probed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _shipped_settings(tmp_path, monkeypatch)
    pod = _doc("Deployment/sonic-gateway")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    # SIGTERM comes after preStop; the drain then takes up to shutdown_grace_s, plus a margin to
    # stop Envoy and flush the usage buffer before Kubernetes sends SIGKILL.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + settings.shutdown_grace_s + 3
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}


def test_every_triton_pod_is_scraped_with_its_facility() -> None:
    scraped = yaml.safe_load(_doc("ConfigMap/prometheus-scrape-sonic")["data"]["scrape-configs.yaml"])
    relabels = scraped[0]["relabel_configs"]
    assert {"source_labels": ["__meta_kubernetes_pod_label_sonic_example_org_facility"],
            "regex": "(.+)", "target_label": "facility"} in relabels  # fmt: skip
    tritons = [doc for name, doc in _documents() if name.split(":")[1].startswith("Deployment/triton-")]
    assert len(tritons) == 2
    for deployment in tritons:
        pod = deployment["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == int(annotations["prometheus.io/port"]) == 8002
        assert pod["metadata"]["labels"]["sonic.example.org/facility"]


def test_the_autoscaler_reads_envoy_s_active_requests() -> None:
    hpa = _doc("HorizontalPodAutoscaler/sonic-gateway")
    name = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(_doc("ConfigMap/prometheus-adapter-rules")["data"]["config.yaml"])["rules"]
    assert [r["name"]["as"] for r in rules] == [name]
    assert rules[0]["seriesQuery"].startswith("envoy_http_downstream_rq_active{")
