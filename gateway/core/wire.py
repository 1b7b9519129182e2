"""Byte-level reading of the few ModelInferRequest/Response fields routing and recording need.

The gateway forwards inference payloads as the bytes the client sent; decoding the whole protobuf
would copy every tensor. This walks the top-level protobuf wire format and reads only the small
fields (model name/version, id, parameters, the first input's shape), skipping tensor contents by
length without touching them. It also reads every input's and output's parameters: a request that
names a shared-memory region is refused, because regions on a facility's Triton belong to whoever
registered them locally (a token holder must not read or write them through the gateway).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from gateway.errors import InvalidArgument, echo

# Wire types of the protobuf encoding.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# Ten continuation bytes in a row: a varint longer than 64 bits allow.
_LONG_VARINT = re.compile(rb"[\x80-\xff]{10}")


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
    """InferParameter: oneof bool(1) int64(2) string(3) double(4) uint64(5); the last one set wins."""
    value: str | int | float | bool | None = None
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _VARINT:
            value = bool(a)
        elif number in (2, 5) and wire == _VARINT:
            value = a - (1 << 64) if number == 2 and a >= 1 << 63 else a
        elif number == 3 and wire == _LEN:
            value = _text(buf, a, b, "a string parameter")
        elif number == 4 and wire == _I64:
            value = float(struct.unpack_from("<d", buf, a)[0])
    return value


# Triton reads shared_memory_region/_offset/_byte_size from a tensor's parameters; any key of the
# family is refused so that a future one is too.
SHARED_MEMORY_PREFIX = "shared_memory"


def shared_memory_refused(key: str, kind: str = "", tensor: str = "") -> InvalidArgument:
    """The one refusal both frontends give a request that names shared memory."""
    where = f"{kind} {echo(tensor)}" if kind else "the request"
    return InvalidArgument(
        f"shared memory is not available through the gateway ({where} has the parameter {echo(key)}); "
        "send the tensor data in the request instead"
    )


def _packed_varints(buf: memoryview, start: int, end: int, what: str) -> None:
    """A packed run of varints must end on a final byte and hold none longer than 10 bytes."""
    if start == end:
        return
    if buf[end - 1] & 0x80 or _LONG_VARINT.search(buf[start:end]):
        raise InvalidArgument(f"malformed request: {what} holds a truncated or oversized varint")


def _packed_fixed(start: int, end: int, size: int, what: str) -> None:
    if (end - start) % size:
        raise InvalidArgument(f"malformed request: {what} is not a whole number of {size}-byte values")


def _contents(buf: memoryview, start: int, end: int) -> None:
    """InferTensorContents: packed numbers (checked by their framing), bytes (not read at all)."""
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _LEN:
            continue
        if number in (1, 2, 3, 4, 5):  # bool, int, int64, uint, uint64
            _packed_varints(buf, a, b, "tensor contents")
        elif number == 6:  # fp32
            _packed_fixed(a, b, 4, "tensor contents")
        elif number == 7:  # fp64
            _packed_fixed(a, b, 8, "tensor contents")


def _tensor(buf: memoryview, start: int, end: int, kind: str) -> int:
    """Check one InferInputTensor (``kind`` "input") or InferRequestedOutputTensor ("output").

    Returns the first element of an input's shape (field 3, packed or not; 0 when absent). Every
    parameters entry is looked at, wherever it sits and however often a key repeats: protobuf keeps
    the last of repeated keys, so checking only one would let a later one through. Every field is
    checked as Triton's parser would check it (framing, UTF-8 of strings), so that bad bytes get
    INVALID_ARGUMENT here rather than Triton's INTERNAL; tensor contents only by their framing.
    """
    params_field = 4 if kind == "input" else 2
    name = ""
    first_dim = -1
    keys: list[str] = []
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _LEN and not (kind == "input" and number == 3 and wire == _VARINT):
            continue
        if number == 1:
            name = _text(buf, a, b, f"an {kind} name")
        elif number == params_field:
            _map_entry(buf, a, b, keys)
        elif kind != "input":
            continue
        elif number == 2:
            _text(buf, a, b, "an input datatype")
        elif number == 3:
            if wire == _LEN:
                _packed_varints(buf, a, b, "an input shape")
            if first_dim < 0:
                if wire == _VARINT:
                    first_dim = a
                elif a < b:
                    first_dim, _ = _varint(buf, a, b)
        elif number == 5:
            _contents(buf, a, b)
    for key in keys:
        if key.startswith(SHARED_MEMORY_PREFIX):
            raise shared_memory_refused(key, kind, name)
    return max(first_dim, 0)


def _named(
    header: InferRequestHeader | StreamResponseHeader, number: int, buf: memoryview, a: int, b: int
) -> bool:
    """Fields 1-3, the same in ModelInferRequest and ModelInferResponse: model_name, model_version, id.

    Stores the one ``number`` names in ``header``; False when ``number`` is another field.
    """
    if number == 1:
        header.model_name = _text(buf, a, b, "model_name")
    elif number == 2:
        header.model_version = _text(buf, a, b, "model_version")
    elif number == 3:
        header.request_id = _text(buf, a, b, "id")
    else:
        return False
    return True


def parse_infer_request(data: bytes | memoryview) -> InferRequestHeader:
    """Read the routing header of a serialized ``inference.ModelInferRequest``.

    Raises :class:`InvalidArgument` for bytes that are not a well-formed request, lack a model name,
    or name shared memory on any input or output.
    """
    buf = memoryview(data)
    header = InferRequestHeader()
    first_input_seen = False
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if wire != _LEN or _named(header, number, buf, a, b):
            continue
        if number == 4:
            key, value = _map_entry(buf, a, b)
            if key and value is not None:
                header.parameters[key] = value
        elif number == 5:
            first_dim = _tensor(buf, a, b, "input")
            if not first_input_seen:
                first_input_seen = True
                header.batch_size = first_dim
        elif number == 6:
            _tensor(buf, a, b, "output")
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


@dataclass
class StreamResponseHeader:
    """What the gateway reads of a ``ModelStreamInferResponse`` to pair it with its request."""

    error_message: str = ""
    model_name: str = ""
    model_version: str = ""
    request_id: str = ""
    final: bool | None = None  # Triton's "triton_final_response" parameter; None when absent


def parse_stream_response(data: bytes | memoryview) -> StreamResponseHeader:
    """Read error, model, version, id and the final flag; output tensors are skipped by length."""
    buf = memoryview(data)
    header = StreamResponseHeader()
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if wire != _LEN:
            continue
        if number == 1:
            header.error_message = _text(buf, a, b, "error_message")
        elif number == 2:
            for n, w, x, y in _fields(buf, a, b):
                if w != _LEN or _named(header, n, buf, x, y):
                    continue
                if n == 4:
                    key, value = _map_entry(buf, x, y)
                    if key == "triton_final_response" and isinstance(value, bool):
                        header.final = value
    return header


def _map_entry(
    buf: memoryview, start: int, end: int, keys: list[str] | None = None
) -> tuple[str, str | int | float | bool | None]:
    """One map<string, InferParameter> entry (the last key and value win, as protobuf has it).

    ``keys`` collects every key the entry carries, not only the one protobuf keeps.
    """
    key = ""
    value: str | int | float | bool | None = None
    for n, w, x, y in _fields(buf, start, end):
        if n == 1 and w == _LEN:
            key = _text(buf, x, y, "a parameter name")
            if keys is not None:
                keys.append(key)
        elif n == 2 and w == _LEN:
            value = _parameter(buf, x, y)
    return key, value


def wrap_stream_response(infer_response: bytes) -> bytes:
    """Serialize ``ModelStreamInferResponse{infer_response: <bytes>}`` without decoding them."""
    return _length_delimited(2, infer_response)


def stream_error_response(message: str, request_id: str = "") -> bytes:
    """Serialize ``ModelStreamInferResponse{error_message, infer_response{id}}``.

    Triton names the request (its ``id``) in a stream's error answers, so a client can tell which
    of its requests failed.
    """
    out = _length_delimited(1, message.encode("utf-8"))
    if request_id:
        out += _length_delimited(2, _length_delimited(3, request_id.encode("utf-8")))
    return out


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


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
