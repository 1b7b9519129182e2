"""The byte-level reader of ModelInferRequest: what routing and recording read, nothing more."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from gateway.core.wire import (
    parse_infer_request,
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
