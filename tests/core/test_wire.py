"""The byte-level reader of ModelInferRequest: what routing and recording read, nothing more."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from gateway.core.wire import (
    parse_infer_request,
    parse_stream_response,
    response_model_version,
    stream_error_response,
    wrap_stream_response,
)
from gateway.errors import InvalidArgument


def _request(batch: int = 235) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="emtrack_michel", model_version="2", id="req-7")
    request.parameters["sonic-job-id"].string_param = "job-42"
    request.parameters["priority"].int64_param = -3
    request.parameters["flag"].bool_param = True
    request.parameters["scale"].double_param = 0.5
    tensor = request.inputs.add(name="main_input", datatype="FP32", shape=[batch, 48, 48, 1])
    del tensor
    request.raw_input_contents.append(np.ones((batch, 48, 48, 1), np.float32).tobytes())
    return request


def test_reads_routing_fields_without_touching_tensors() -> None:
    header = parse_infer_request(_request().SerializeToString())
    assert header.model_name == "emtrack_michel"
    assert header.model_version == "2"
    assert header.request_id == "req-7"
    assert header.batch_size == 235
    assert header.parameters == {"sonic-job-id": "job-42", "priority": -3, "flag": True, "scale": 0.5}


def test_batch_size_of_tensor_sent_as_contents() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1693, 4])
    tensor.contents.fp32_contents.extend([0.0] * 4)
    assert parse_infer_request(request.SerializeToString()).batch_size == 1693


def test_missing_model_name_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="model_name is empty"):
        parse_infer_request(service_pb2.ModelInferRequest(id="x").SerializeToString())


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x0a\xff",  # length runs past the end
        b"\x0a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # oversized varint
        b"\x0f",  # wire type 7 does not exist
        b"\x00\x01",  # field number 0
        b"\x0a\x02\xff\xfe",  # model name that is not UTF-8
    ],
)
def test_malformed_bytes_are_invalid_argument(garbage: bytes) -> None:
    with pytest.raises(InvalidArgument, match="malformed request"):
        parse_infer_request(garbage)


def test_response_version_and_stream_wrapping_round_trip() -> None:
    response = service_pb2.ModelInferResponse(model_name="m", model_version="3", id="abc")
    response.raw_output_contents.append(b"\x00" * 1000)
    raw = response.SerializeToString()
    assert response_model_version(raw) == "3"
    wrapped = service_pb2.ModelStreamInferResponse.FromString(wrap_stream_response(raw))
    assert wrapped.infer_response == response
    assert service_pb2.ModelStreamInferResponse.FromString(stream_error_response("no")).error_message == "no"


# -- shared memory is refused: regions on a facility's Triton belong to its local clients -----------------


def _key(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _len(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def _string_param(key: str, value: str) -> bytes:
    """One map<string, InferParameter> entry: key (1), value (2) = InferParameter{string_param (3)}."""
    return _len(1, key.encode()) + _len(2, _len(3, value.encode()))


@pytest.mark.parametrize("key", ["shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"])
def test_input_naming_shared_memory_is_refused(key: str) -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    tensor.parameters[key].string_param = "victim_region"
    with pytest.raises(InvalidArgument, match="shared memory is not available through the gateway") as err:
        parse_infer_request(request.SerializeToString())
    assert "input 'INPUT0'" in err.value.message
    assert key in err.value.message


def test_output_naming_shared_memory_is_refused() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(bytes(16))
    out = request.outputs.add(name="OUTPUT0")
    out.parameters["shared_memory_region"].string_param = "victim_region"
    out.parameters["shared_memory_byte_size"].int64_param = 16
    with pytest.raises(InvalidArgument, match="output 'OUTPUT0'"):
        parse_infer_request(request.SerializeToString())


def test_shared_memory_on_a_later_input_is_refused() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1.0, 2.0])
    later = request.inputs.add(name="b", datatype="FP32", shape=[2])
    later.parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(InvalidArgument, match="input 'b'"):
        parse_infer_request(request.SerializeToString())


@pytest.mark.parametrize(
    "tensor",
    [
        # parameters before the name, contents in between
        _len(4, _string_param("shared_memory_region", "r")) + _len(5, _len(6, bytes(8))) + _len(1, b"x"),
        # the map entry's value before its key
        _len(4, _len(2, _len(3, b"r")) + _len(1, b"shared_memory_region")) + _len(1, b"x"),
        # the key twice in one entry: protobuf keeps the last one
        _len(4, _len(1, b"harmless") + _len(2, _len(3, b"r")) + _len(1, b"shared_memory_region")),
        # a harmless entry after the refused one
        _len(4, _string_param("shared_memory_region", "r")) + _len(4, _string_param("binary", "1")),
    ],
    ids=["params-first", "value-before-key", "key-repeated", "entry-after"],
)
def test_shared_memory_is_found_in_any_field_order(tensor: bytes) -> None:
    raw = _len(5, tensor) + _len(1, b"m")  # the input even precedes the model name
    with pytest.raises(InvalidArgument, match="shared memory is not available"):
        parse_infer_request(raw)


def test_ordinary_parameters_on_tensors_pass_and_keep_the_batch_size() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[7, 2])
    tensor.parameters["binary_data_size"].int64_param = 56
    request.outputs.add(name="y").parameters["classification"].int64_param = 2
    assert parse_infer_request(request.SerializeToString()).batch_size == 7


def test_refusal_message_is_bounded_for_a_huge_tensor_name() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x" * 100_000).parameters["shared_memory_region"].string_param = "r"
    with pytest.raises(InvalidArgument) as err:
        parse_infer_request(request.SerializeToString())
    assert len(err.value.message) < 1000
    assert "100000 characters" in err.value.message


def test_stream_error_names_the_request_as_triton_does() -> None:
    answer = service_pb2.ModelStreamInferResponse.FromString(stream_error_response("bad", "req-9"))
    assert answer.error_message == "bad"
    assert answer.infer_response.id == "req-9"


def test_stream_response_header_reads_id_version_and_final_flag() -> None:
    response = service_pb2.ModelInferResponse(model_name="repeat_fp32", model_version="1", id="r")
    response.parameters["triton_final_response"].bool_param = False
    response.raw_output_contents.append(bytes(64))
    header = parse_stream_response(wrap_stream_response(response.SerializeToString()))
    assert (header.model_name, header.model_version, header.request_id, header.final) == (
        "repeat_fp32",
        "1",
        "r",
        False,
    )
    error = parse_stream_response(stream_error_response("boom", "x"))
    assert (error.error_message, error.request_id, error.final) == ("boom", "x", None)


def _good_request() -> bytes:
    request = service_pb2.ModelInferRequest(model_name="identity_fp32")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 48, 48, 1])
    request.raw_input_contents.append(bytes(64))
    return request.SerializeToString()


@pytest.mark.parametrize(
    "tail",
    [
        _len(5, b"\x0a\xff\xff"),  # a later input whose name runs past its end
        _len(5, _len(1, b"x") + _len(5, _len(2, b"\xff\xff\xff"))),  # contents: truncated varints
        _len(5, _len(1, b"x") + _len(5, _len(6, b"\x00\x00\x00"))),  # contents: 3 bytes of fp32
        _len(5, _len(1, b"\xff")),  # a later input's name is not UTF-8
        _len(5, _len(1, b"x") + _len(2, b"\xc3")),  # its datatype is not UTF-8
        _len(5, _len(1, b"x") + _len(3, b"\x80")),  # its shape ends inside a varint
        _len(6, _len(2, _len(1, b"\xfe"))),  # an output parameter name is not UTF-8
        _len(4, _len(2, _len(3, b"\xff"))),  # a request parameter's string value is not UTF-8
        _key(7, 2) + _varint(16) + b"abc",  # raw contents shorter than their length says
    ],
    ids=[
        "later-input",
        "contents-varint",
        "contents-fp32",
        "input-name",
        "datatype",
        "shape",
        "output-param",
        "string-param",
        "raw-truncated",
    ],
)
def test_garbage_anywhere_is_invalid_argument(tail: bytes) -> None:
    """Triton answers these INTERNAL ("Unable to parse request"); the gateway says what is wrong."""
    parse_infer_request(_good_request())
    with pytest.raises(InvalidArgument, match="malformed request"):
        parse_infer_request(_good_request() + tail)


def test_tensor_contents_of_every_type_pass() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype="INT64", shape=[3])
    tensor.contents.int64_contents.extend([-1, 2**62, 0])
    tensor.contents.fp32_contents.extend([1.5])
    tensor.contents.fp64_contents.extend([2.5])
    tensor.contents.bool_contents.extend([True])
    tensor.contents.bytes_contents.append(b"\xff\xfe")  # bytes, not text
    assert parse_infer_request(request.SerializeToString()).batch_size == 3
