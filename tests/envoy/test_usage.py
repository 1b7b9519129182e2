"""Envoy's usage-log lines -> usage records: parsed exactly, recorded once, failures not billed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.core.recording import InMemoryRecorder
from gateway.envoy.render import USAGE_FIELDS, usage_log_format
from gateway.envoy.usage import UsageSink, parse_line, served_version
from gateway.observability.metrics import gateway_metrics
from gateway.observability.observer import InferenceObserver
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

LAB = Backend("lab/10.0.0.1:8001", "lab", "10.0.0.1:8001", "10.0.0.1:8000")


def _line(protocol: str, *, grpc_status: int | None = 0, status: int = 200, **fields: Any) -> bytes:
    """A line as Envoy's JSON formatter writes it for ``usage_log_format(protocol)`` (missing: null);
    model, version, subject, issuer and batch go into the policy filter's one tab-separated entry."""
    usage: dict[str, Any] = {"model": "cnn", "version": "", "subject": "alice%40cern", "issuer": "https://i"}
    usage.update(batch=1)
    usage.update((k, fields.pop(k)) for k in USAGE_FIELDS if k in fields)
    entry: dict[str, Any] = {
        "protocol": protocol,
        "u": "\t".join("" if usage[k] is None else str(usage[k]) for k in USAGE_FIELDS),
        "upstream": "10.0.0.1:8001",
        "status": status,
        "flags": "-",
        "details": "via_upstream",
        "job": "job-1",
        "dataset": "np04%C3%A9",  # the client's encoding of 'np04é'
        "request_id": "r-1",
        "request_bytes": 9232,
        "response_bytes": 40,
        "duration_us": 1500,
        "backend_us": 900,
    }
    if protocol == "grpc":
        failed = grpc_status not in (None, 0)
        entry.update(grpc_status=grpc_status, grpc_message="model%20is%20busy" if failed else None)
        entry["grpc_message_headers"] = None
    entry.update(fields)
    assert set(entry) == set(usage_log_format(protocol))  # the keys Envoy is told to write
    return json.dumps(entry).encode()


def test_a_grpc_entry_becomes_the_same_record_the_python_path_writes() -> None:
    parsed = parse_line(_line("grpc", batch=235))
    assert parsed is not None
    assert (parsed.protocol, parsed.model, parsed.version) == ("grpc", "cnn", "")
    assert (parsed.ok, parsed.code) == (True, "OK")
    assert (parsed.subject, parsed.issuer, parsed.inferences) == ("alice@cern", "https://i", 235)
    assert (parsed.job_id, parsed.dataset, parsed.request_id) == ("job-1", "np04é", "r-1")
    assert parsed.upstream == ("10.0.0.1", 8001)
    assert (parsed.request_bytes, parsed.response_bytes) == (9232, 40)
    assert (parsed.duration_s, parsed.backend_s) == (0.0015, 0.0009)
    v6 = parse_line(_line("grpc", upstream="[fd00::1]:8001"))
    assert v6 is not None
    assert v6.upstream == ("fd00::1", 8001)


def test_failures_carry_what_the_client_was_told_and_are_not_billed() -> None:
    registry = Registry([LAB])
    registry.update_health(LAB.id, True, {"cnn": frozenset({"1", "3"})})
    recorder = InMemoryRecorder()
    observer = InferenceObserver(gateway_metrics(CollectorRegistry()), registry)
    service = UsageSink(recorder, observer, lambda: registry.snapshot, lambda h, p: LAB)
    failed = parse_line(_line("grpc", grpc_status=14, batch=4))
    assert failed is not None
    assert (failed.ok, failed.code, failed.error) == (False, "UNAVAILABLE", "model is busy")
    service.handle(failed)
    assert list(recorder.events) == []
    reset = "upstream_reset_before_response"
    unfinished = parse_line(_line("grpc", grpc_status=None, status=0, details=reset))
    assert unfinished is not None
    assert (unfinished.ok, unfinished.code, unfinished.error) == (False, "UNKNOWN", reset)
    refused = parse_line(_line("http", status=503, batch=2))
    assert refused is not None
    assert (refused.ok, refused.code) == (False, "503")
    for request in (unfinished, refused):
        service.handle(request)
    assert list(recorder.events) == []
    service.line(_line("http", batch=2))
    service.flush()
    (event,) = recorder.events
    assert (event.model, event.version_served, event.backend_id, event.inferences) == ("cnn", "3", LAB.id, 2)
    assert (event.subject, event.dataset) == ("alice@cern", "np04é")


def test_lines_without_the_policy_mark_are_not_fast_path_requests() -> None:
    assert parse_line(_line("grpc", u=None)) is None


def test_an_entry_without_a_batch_counts_no_inferences_and_a_malformed_one_is_refused_loudly() -> None:
    parsed = parse_line(_line("grpc", batch=None, version="2", issuer="https://i%09x"))
    assert parsed is not None
    assert (parsed.version, parsed.issuer, parsed.inferences) == ("2", "https://i\tx", 0)
    with pytest.raises(ValueError, match="holds 4 fields"):
        parse_line(_line("grpc", u="cnn\t\talice\t1"))


def test_the_served_version_is_the_requested_one_or_the_newest_ready() -> None:
    registry = Registry([LAB])
    registry.update_health(LAB.id, True, {"cnn": frozenset({"2", "10"})})
    assert served_version(registry.snapshot, LAB, "cnn", "2") == "2"
    assert served_version(registry.snapshot, LAB, "cnn", "") == "10"  # numerically newest, not "2"
    assert served_version(registry.snapshot, LAB, "other", "") == ""


def test_a_client_that_left_is_counted_as_cancelled_not_as_served() -> None:
    parsed = parse_line(_line("http", status=0, flags="DC", batch=2))
    assert parsed is not None
    assert (parsed.ok, parsed.code) == (False, "499")
    registry = Registry([LAB])
    metrics = CollectorRegistry()
    observer = InferenceObserver(gateway_metrics(metrics), registry)
    recorder = InMemoryRecorder()
    UsageSink(recorder, observer, lambda: registry.snapshot, lambda h, p: LAB).handle(parsed)
    assert list(recorder.events) == []
    labels = {"frontend": "http", "outcome": "cancelled", "code": "499"}
    samples = [s for m in metrics.collect() for s in m.samples if s.name == "sonic_gateway_requests_total"]
    assert [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())] == [1.0]


def _series(metrics: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for m in metrics.collect()
        for s in m.samples
        if s.name == name
    }


def test_a_read_of_answered_requests_is_counted_in_groups_with_every_request_in_it() -> None:
    registry = Registry([LAB])
    registry.update_health(LAB.id, True, {"cnn": frozenset({"3"})})
    metrics = CollectorRegistry()
    recorder = InMemoryRecorder()
    observer = InferenceObserver(gateway_metrics(metrics), registry, access_log=False)
    sink = UsageSink(recorder, observer, lambda: registry.snapshot, lambda h, p: LAB)
    for batch in (1, 2, 3):
        sink.line(_line("grpc", batch=batch, request_id=f"r-{batch}"))  # differ only per request
    sink.line(_line("grpc", batch=5, job="job-2"))  # another job: its own record
    sink.line(_line("grpc", grpc_status=14))  # a failure: on its own, not billed
    assert list(recorder.events) == []  # nothing until the read ends
    sink.flush()
    events = sorted(recorder.events, key=lambda e: e.job_id or "")
    assert [(e.job_id, e.requests, e.inferences, e.version_served) for e in events] == [
        ("job-1", 3, 6, "3"),
        ("job-2", 1, 5, "3"),
    ]
    requests = _series(metrics, "sonic_gateway_requests_total")
    assert [v for k, v in requests.items() if ("outcome", "ok") in k] == [4.0]
    assert [v for k, v in requests.items() if ("outcome", "unavailable") in k] == [1.0]
    assert sum(_series(metrics, "sonic_gateway_inferences_total").values()) == 11.0
    assert sum(_series(metrics, "sonic_gateway_request_bytes_total").values()) == 5 * 9232  # failure too
    # Every answered request's own times are observed: 4 answered + 1 failure.
    assert sum(_series(metrics, "sonic_gateway_overhead_seconds_count").values()) == 5.0
    assert sum(_series(metrics, "sonic_gateway_backend_duration_seconds_count").values()) == 5.0
    sink.flush()
    assert len(recorder.events) == 2  # a flush records each group once


def test_with_an_access_log_line_per_request_each_request_is_handled_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry([LAB])
    recorder = InMemoryRecorder()
    observer = InferenceObserver(gateway_metrics(CollectorRegistry()), registry, access_log=True)
    sink = UsageSink(recorder, observer, lambda: registry.snapshot, lambda h, p: LAB)
    with caplog.at_level("INFO", logger="gateway.access"):
        sink.line(_line("grpc", request_id="r-1"))
        sink.line(_line("grpc", request_id="r-2"))
    assert [r.getMessage() for r in caplog.records if r.name == "gateway.access"] == ["inference"] * 2
    assert [e.requests for e in recorder.events] == [1, 1]
