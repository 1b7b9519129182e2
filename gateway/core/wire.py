"""Byte-level reading of the few ModelInferRequest/Response fields routing and recording need.

The gateway forwards inference payloads as the bytes the client sent; decoding the whole protobuf
would copy every tensor. This walks the top-level protobuf wire format and reads only the small
fields (model name/version, id, parameters, the first input's shape), skipping tensor contents by
length without touching them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gateway.errors import InvalidArgument

# Wire types of the protobuf encoding.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass
class InferRequestHeader:
    model_name: str = ""
    model_version: str = ""
    request_id: str = ""
    parameters: dict[str, str | int | float | bool] = field(default_factory=dict)
    batch_size: int = 0  # first dimension of the first input; 0 when unknown


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end or shift > 63:
            raise InvalidArgument("malformed request: truncated or oversized varint in the protobuf")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field number, wire type, value or start, end) for each top-level field in buf[start:end]."""
    out: list[tuple[int, int, int, int]] = []
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise InvalidArgument("malformed request: protobuf field number 0")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            out.append((number, wire, value, pos))
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise InvalidArgument("malformed request: a protobuf field runs past the end of the message")
            out.append((number, wire, pos, pos + length))
            pos += length
        elif wire == _I64:
            if pos + 8 > end:
                raise InvalidArgument("malformed request: truncated 64-bit protobuf field")
            out.append((number, wire, pos, pos + 8))
            pos += 8
        elif wire == _I32:
            if pos + 4 > end:
                raise InvalidArgument("malformed request: truncated 32-bit protobuf field")
            out.append((number, wire, pos, pos + 4))
            pos += 4
        else:
            raise InvalidArgument(f"malformed request: unsupported protobuf wire type {wire}")
    return out


def _text(buf: memoryview, start: int, end: int, what: str) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"malformed request: {what} is not valid UTF-8") from exc


def _parameter(buf: memoryview, start: int, end: int) -> str | int | float | bool | None:
    """InferParameter: oneof bool(1) int64(2) string(3) double(4) uint64(5)."""

    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _VARINT:
            return bool(a)
        if number in (2, 5) and wire == _VARINT:
            return a - (1 << 64) if number == 2 and a >= 1 << 63 else a
        if number == 3 and wire == _LEN:
            return _text(buf, a, b, "a string parameter")
        if number == 4 and wire == _I64:
            return float(struct.unpack_from("<d", buf, a)[0])
    return None


def _first_dim(buf: memoryview, start: int, end: int) -> int:
    """First element of InferInputTensor.shape (field 3, packed or not)."""
    for number, wire, a, b in _fields(buf, start, end):
        if number == 3 and wire == _LEN:
            if a == b:
                return 0
            value, _ = _varint(buf, a, b)
            return value
        if number == 3 and wire == _VARINT:
            return a
    return 0


def parse_infer_request(data: bytes | memoryview) -> InferRequestHeader:
    """Read the routing header of a serialized ``inference.ModelInferRequest``.

    Raises :class:`InvalidArgument` for bytes that are not a well-formed request or lack a model name.
    """
    buf = memoryview(data)
    header = InferRequestHeader()
    first_input_seen = False
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if wire != _LEN:
            continue
        if number == 1:
            header.model_name = _text(buf, a, b, "model_name")
        elif number == 2:
            header.model_version = _text(buf, a, b, "model_version")
        elif number == 3:
            header.request_id = _text(buf, a, b, "id")
        elif number == 4:
            key = ""
            value: str | int | float | bool | None = None
            for n, w, x, y in _fields(buf, a, b):
                if n == 1 and w == _LEN:
                    key = _text(buf, x, y, "a parameter name")
                elif n == 2 and w == _LEN:
                    value = _parameter(buf, x, y)
            if key and value is not None:
                header.parameters[key] = value
        elif number == 5 and not first_input_seen:
            first_input_seen = True
            header.batch_size = _first_dim(buf, a, b)
    if not header.model_name:
        raise InvalidArgument("malformed request: model_name is empty; name the model to run")
    return header


def response_model_version(data: bytes) -> str:
    """``model_version`` (field 2) of a serialized ModelInferResponse; it precedes the tensors."""
    buf = memoryview(data)
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire != _LEN:
            return ""
        length, pos = _varint(buf, pos, end)
        if number == 2:
            return _text(buf, pos, min(pos + length, end), "model_version")
        if number > 2:
            return ""
        pos += length
    return ""


def wrap_stream_response(infer_response: bytes) -> bytes:
    """Serialize ``ModelStreamInferResponse{infer_response: <bytes>}`` without decoding them."""
    return b"\x12" + _encode_varint(len(infer_response)) + infer_response


def stream_error_response(message: str) -> bytes:
    """Serialize ``ModelStreamInferResponse{error_message: message}``."""
    raw = message.encode("utf-8")
    return b"\x0a" + _encode_varint(len(raw)) + raw


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
