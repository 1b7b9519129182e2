"""What the REST frontend reads of an infer body: the shared-memory refusal must not be dodged."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable

import pytest

from gateway.errors import InvalidArgument, PayloadTooLarge
from gateway.frontends.http.infer_body import checked_batch_size

LIMIT = 1 << 30
SHM_INPUT = {
    "inputs": [
        {
            "name": "INPUT0",
            "shape": [1, 4],
            "datatype": "FP32",
            "parameters": {"shared_memory_region": "victim", "shared_memory_byte_size": 16},
        }
    ]
}
SHM_OUTPUT = {
    "inputs": [{"name": "INPUT0", "shape": [1], "datatype": "FP32", "data": [1.0]}],
    "outputs": [{"name": "OUTPUT0", "parameters": {"shared_memory_region": "victim"}}],
}


def _refused(body: bytes, header_length: str | None = None, encoding: str | None = None) -> str:
    with pytest.raises(InvalidArgument, match="shared memory is not available through the gateway") as err:
        checked_batch_size(body, header_length, encoding, LIMIT)
    return err.value.message


@pytest.mark.parametrize("request_json", [SHM_INPUT, SHM_OUTPUT], ids=["input", "output"])
def test_json_request_naming_shared_memory_is_refused(request_json: dict[str, object]) -> None:
    assert "shared_memory_region" in _refused(json.dumps(request_json).encode())


def test_escaped_key_is_refused() -> None:
    # Triton's JSON parser decodes \u escapes: "\u0073hared..." is the same key.
    body = json.dumps(SHM_INPUT).replace("shared_memory_region", "\\u0073hared_memory_region").encode()
    assert b"shared_memory" not in body.replace(b"shared_memory_byte_size", b"")  # only the escaped one
    _refused(body.replace(b"shared_memory_byte_size", b"binary_data_size"))


def test_duplicate_parameters_objects_are_both_checked() -> None:
    # Triton reads the first "parameters", Python's json the last: every one must be checked.
    body = (
        b'{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"FP32",'
        b'"parameters":{"shared_memory_region":"victim"},"parameters":{}}]}'
    )
    _refused(body)


def test_binary_extension_header_is_checked_and_tensor_bytes_are_not() -> None:
    header = json.dumps(SHM_INPUT).encode()
    _refused(header + bytes(16), str(len(header)))
    clean = b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":20}}]}'
    checked_batch_size(clean + b"\x10\0\0\0shared_memory_x!", str(len(clean)), None, LIMIT)


@pytest.mark.parametrize("length", [None, "0", "junk", "999999"])
def test_header_length_triton_reads_as_whole_body_is_checked_whole(length: str | None) -> None:
    _refused(json.dumps(SHM_INPUT).encode(), length)


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "zlib", "raw-deflate"],
)
def test_compressed_bodies_are_checked(encoding: str, compress: Callable[[bytes], bytes]) -> None:
    _refused(compress(json.dumps(SHM_INPUT).encode()), None, encoding)


def test_key_split_across_inflate_chunks_is_found() -> None:
    # Padding puts the key across the 1 MiB boundary of the chunked inflate.
    prefix = b'{"pad":"' + b"a" * ((1 << 20) - 8 - 5) + b'","inputs":[{"name":"x","parameters":{"'
    body = prefix + b'shared_memory_region":"r"}}]}'
    _refused(gzip.compress(body), None, "gzip")


def test_unknown_encoding_is_refused_rather_than_forwarded_unread() -> None:
    with pytest.raises(InvalidArgument, match="Content-Encoding 'br' is not supported"):
        checked_batch_size(b"\x00\x01", None, "br", LIMIT)


def test_corrupt_compressed_body_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="not valid gzip"):
        checked_batch_size(b"definitely not gzip", None, "gzip", LIMIT)


def test_inflating_past_the_limit_is_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="inflates to more than"):
        checked_batch_size(gzip.compress(bytes(3 << 20)), None, "gzip", 2 << 20)


def test_escape_in_unparseable_header_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        checked_batch_size(b'{"inputs": [\\u0073', None, None, LIMIT)


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}',
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["caf\\u00e9"]}]}',  # escape, no key
        # the word as a value, not a name
        b'{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["shared_memory_region"]}]}',
    ],
)
def test_ordinary_requests_pass(body: bytes) -> None:
    checked_batch_size(body, None, None, LIMIT)
    checked_batch_size(gzip.compress(body), None, "gzip", LIMIT)


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
def test_checked_batch_size_is_batch_size_of_the_same_body(encoding: str | None) -> None:
    header = b'{"inputs":[{"name":"x","shape":[7,2],"datatype":"FP32","parameters":{"binary_data_size":56}}]}'
    plain = header + bytes(56)
    body = {None: plain, "gzip": gzip.compress(plain), "deflate": zlib.compress(plain)}[encoding]
    assert checked_batch_size(body, str(len(header)), encoding, LIMIT) == 7
    shm = json.dumps(SHM_INPUT).encode()
    with pytest.raises(InvalidArgument, match="shared memory is not available through the gateway"):
        checked_batch_size(zlib.compress(shm) if encoding else shm, None, encoding, LIMIT)
