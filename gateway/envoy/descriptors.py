"""Triton's gRPC service as a FileDescriptorSet, for Envoy's grpc_field_extraction filter.

Built from the descriptors compiled into ``tritonclient.grpc.service_pb2``, so it always matches the
protocol the rest of the gateway speaks.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor
from tritonclient.grpc import service_pb2

SERVICE = "inference.GRPCInferenceService"


@functools.cache
def triton_descriptor_set() -> bytes:
    files: list[FileDescriptor] = []

    def visit(fd: FileDescriptor) -> None:
        if fd in files:
            return
        for dep in fd.dependencies:
            visit(dep)
        files.append(fd)

    visit(service_pb2.DESCRIPTOR)
    out = descriptor_pb2.FileDescriptorSet()
    for fd in files:
        proto = out.file.add()
        fd.CopyToProto(proto)
    return bytes(out.SerializeToString())
