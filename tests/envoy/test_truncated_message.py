"""A gRPC message whose length prefix promises more bytes than arrive gets an answer at once.

Written with raw HTTP/2 frames: no gRPC client sends such a message. Triton answers it in
milliseconds; through the gateway the public port (Envoy) must too, not leave the call hanging.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.triton.launcher import TritonServer
from tests.conftest import gateway_settings

pytestmark = pytest.mark.triton

HEADERS, DATA, SETTINGS, RST_STREAM, GOAWAY = 1, 0, 4, 3, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:  # HPACK literal without indexing, no Huffman
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def truncated_call(port: int, wait_s: float) -> str:
    """Send a ModelInfer whose 5-byte prefix says 100 bytes but 10 follow; say how the server ended it."""
    headers = b"".join(
        _literal(k, v)
        for k, v in [
            (":method", "POST"), (":scheme", "http"), (":authority", "gateway"),
            (":path", "/inference.GRPCInferenceService/ModelInfer"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]
    )  # fmt: skip
    message = b"\x00" + struct.pack(">I", 100) + b"\x0a\x08identity"
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(SETTINGS, 0, 0, b""))
        sock.sendall(_frame(HEADERS, END_HEADERS, 1, headers) + _frame(DATA, END_STREAM, 1, message))
        deadline = time.monotonic() + wait_s
        buffer = b""
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return "connection closed"
            buffer += chunk
            while len(buffer) >= 9:
                length = int.from_bytes(buffer[:3], "big")
                if len(buffer) < 9 + length:
                    break
                kind, flags = buffer[3], buffer[4]
                stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
                buffer = buffer[9 + length :]
                if kind == SETTINGS and not flags & ACK:
                    sock.sendall(_frame(SETTINGS, ACK, 0, b""))
                if stream == 1 and kind == HEADERS and flags & END_STREAM:
                    return "answered"
                if (stream == 1 and kind == RST_STREAM) or kind == GOAWAY:
                    return "reset"
    return "no answer"


@pytest.fixture
async def edge(tritons: list[TritonServer], tmp_path: Path) -> AsyncIterator[Gateway]:
    settings = gateway_settings(tritons, envoy={"enabled": True}, database_url=f"sqlite:///{tmp_path}/c.db")
    gateway = Gateway(settings, metrics_registry=CollectorRegistry())
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(grace_s=1)


async def test_a_truncated_message_is_answered_at_once(edge: Gateway) -> None:
    # Bounded wait, not a timing goal: Triton answers in ~10 ms, the Python-only gateway never did.
    assert await asyncio.to_thread(truncated_call, edge.grpc_port, 5.0) == "answered"
