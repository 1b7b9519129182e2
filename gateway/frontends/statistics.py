"""Merge ModelStatistics answers of several backends into one, as if one server had served it all.

Shared by the gRPC and HTTP frontends (HTTP parses Triton's JSON into the same protos first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tritonclient.grpc import service_pb2

_MAX_FIELDS = {"last_inference"}


def _is_repeated(fd: Any) -> bool:
    # protobuf >= 5.29 deprecates FieldDescriptor.label in favour of is_repeated
    if hasattr(fd, "is_repeated"):
        return bool(fd.is_repeated)
    return bool(fd.label == fd.LABEL_REPEATED)


def _merge_message(into: Any, other: Any) -> None:
    for fd, value in other.ListFields():
        name = fd.name
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            target = getattr(into, name)
            for key, item in value.items():
                _merge_message(target[key], item)
        elif _is_repeated(fd):
            if name == "batch_stats":
                by_size = {b.batch_size: b for b in getattr(into, name)}
                for item in value:
                    if item.batch_size in by_size:
                        _merge_message(by_size[item.batch_size], item)
                    else:
                        getattr(into, name).add().CopyFrom(item)
            else:
                getattr(into, name).extend(value)
        elif fd.message_type is not None:
            _merge_message(getattr(into, name), value)
        elif name in _MAX_FIELDS:
            setattr(into, name, max(getattr(into, name), value))
        elif isinstance(value, int) and not isinstance(value, bool) and name not in ("batch_size",):
            setattr(into, name, getattr(into, name) + value)
        elif not getattr(into, name):
            setattr(into, name, value)


def merge_statistics(
    responses: Iterable[service_pb2.ModelStatisticsResponse],
    visible: Callable[[str], bool] = lambda model: True,
) -> service_pb2.ModelStatisticsResponse:
    """Sum the counters per (model, version); models ``visible`` refuses are left out."""
    merged: dict[tuple[str, str], Any] = {}
    for response in responses:
        for stats in response.model_stats:
            if not visible(stats.name):
                continue
            key = (stats.name, stats.version)
            if key not in merged:
                merged[key] = service_pb2.ModelStatistics()
                merged[key].CopyFrom(stats)
            else:
                _merge_message(merged[key], stats)
    out = service_pb2.ModelStatisticsResponse()
    for key in sorted(merged):
        out.model_stats.add().CopyFrom(merged[key])
    return out
