"""Envoy's access-log entries -> usage records: parsed exactly, recorded once, failures not billed."""

from __future__ import annotations

from typing import Any

from envoy.data.accesslog.v3 import accesslog_pb2
from prometheus_client import CollectorRegistry

from gateway.core.recording import InMemoryRecorder
from gateway.envoy.usage import UsageService, parse_entry, served_version
from gateway.observability.metrics import gateway_metrics
from gateway.observability.observer import InferenceObserver
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

LAB = Backend("lab/10.0.0.1:8001", "lab", "10.0.0.1:8001", "10.0.0.1:8000")


def _entry(path: str, *, status: str | None = "0", code: int = 200, **sonic: Any) -> Any:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.path = path
    entry.request.request_headers["sonic-job-id"] = "job-1"
    entry.request.request_headers["sonic-dataset"] = "np04%C3%A9"  # the client's encoding of 'np04é'
    entry.request.request_headers["x-request-id"] = "r-1"
    entry.request.request_body_bytes = 9232
    entry.response.response_code.value = code
    entry.response.response_body_bytes = 40
    if status is not None:
        entry.response.response_trailers["grpc-status"] = status
    if status not in (None, "0"):
        entry.response.response_trailers["grpc-message"] = "model%20is%20busy"
    address = entry.common_properties.upstream_remote_address.socket_address
    address.address, address.port_value = "10.0.0.1", 8001
    fields = entry.common_properties.metadata.filter_metadata["sonic"]
    fields.update({"model": "cnn", "version": "", "subject": "alice%40cern", "issuer": "https://i", **sonic})
    return entry


def test_a_grpc_entry_becomes_the_same_record_the_python_path_writes() -> None:
    parsed = parse_entry(_entry("/inference.GRPCInferenceService/ModelInfer", batch=235))
    assert parsed is not None
    assert (parsed.protocol, parsed.model, parsed.version) == ("grpc", "cnn", "")
    assert (parsed.ok, parsed.code) == (True, "OK")
    assert (parsed.subject, parsed.issuer, parsed.inferences) == ("alice@cern", "https://i", 235)
    assert (parsed.job_id, parsed.dataset, parsed.request_id) == ("job-1", "np04é", "r-1")
    assert parsed.upstream == ("10.0.0.1", 8001)


def test_failures_carry_what_the_client_was_told_and_are_not_billed() -> None:
    registry = Registry([LAB])
    registry.update_health(LAB.id, True, {"cnn": frozenset({"1", "3"})})
    recorder = InMemoryRecorder()
    observer = InferenceObserver(gateway_metrics(CollectorRegistry()), registry)
    service = UsageService(recorder, observer, lambda: registry.snapshot, lambda h, p: LAB)
    failed = parse_entry(_entry("/inference.GRPCInferenceService/ModelInfer", status="14", batch=4))
    assert failed is not None
    assert (failed.ok, failed.code, failed.error) == (False, "UNAVAILABLE", "model is busy")
    service.handle(failed)
    assert list(recorder.events) == []
    rest = parse_entry(_entry("/v2/models/cnn/infer", status=None, batch=2))
    assert rest is not None
    service.handle(rest)
    (event,) = recorder.events
    assert (event.model, event.version_served, event.backend_id, event.inferences) == ("cnn", "3", LAB.id, 2)
    assert (event.subject, event.dataset) == ("alice@cern", "np04é")


def test_entries_without_the_policy_mark_are_not_fast_path_requests() -> None:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.path = "/inference.GRPCInferenceService/ModelInfer"
    assert parse_entry(entry) is None


def test_the_served_version_is_the_requested_one_or_the_newest_ready() -> None:
    registry = Registry([LAB])
    registry.update_health(LAB.id, True, {"cnn": frozenset({"2", "10"})})
    assert served_version(registry.snapshot, LAB, "cnn", "2") == "2"
    assert served_version(registry.snapshot, LAB, "cnn", "") == "10"  # numerically newest, not "2"
    assert served_version(registry.snapshot, LAB, "other", "") == ""


def test_a_client_that_left_is_counted_as_cancelled_not_as_served() -> None:
    entry = _entry("/v2/models/cnn/infer", status=None, batch=2)
    entry.common_properties.response_flags.downstream_connection_termination = True
    entry.response.response_code.value = 0
    parsed = parse_entry(entry)
    assert parsed is not None
    assert (parsed.ok, parsed.code) == (False, "499")
    registry = Registry([LAB])
    metrics = CollectorRegistry()
    observer = InferenceObserver(gateway_metrics(metrics), registry)
    recorder = InMemoryRecorder()
    UsageService(recorder, observer, lambda: registry.snapshot, lambda h, p: LAB).handle(parsed)
    assert list(recorder.events) == []
    labels = {"frontend": "http", "outcome": "cancelled", "code": "499"}
    samples = [s for m in metrics.collect() for s in m.samples if s.name == "sonic_gateway_requests_total"]
    assert [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())] == [1.0]
