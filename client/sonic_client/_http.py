"""HTTP transports: KServe v2 REST with Triton's binary-tensor extension, spoken through httpx.

httpx keeps the Retry-After header (tritonclient.http drops response headers on errors) and needs
no gevent. It is an optional dependency (``pip install 'sonic-client[http]'``), imported when an
HTTP transport is opened, never at package import; the request/response codec needs only numpy
and tritonclient.

Deadlines: the client closes the connection when its timeout fires (httpx drops a connection
whose response it stopped reading, so the gateway sees the client leave), and tells the server
the deadline in two ways, as HTTP has no standard deadline header:

* header ``sonic-timeout-ms``: the request's timeout in whole milliseconds, for the gateway;
* inference parameter ``"timeout"`` (microseconds) in the JSON header of ``/infer`` requests:
  Triton's own per-request timeout, the one ``tritonclient.http`` sends, which Triton applies
  while the request waits in a dynamic batcher's queue.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from tritonclient.utils import (
    deserialize_bytes_tensor,
    np_to_triton_dtype,
    serialize_byte_tensor,
    triton_to_np_dtype,
)

from ._errors import InferenceError
from ._optional import require
from ._retry import parse_retry_after

if TYPE_CHECKING:
    import httpx

__all__ = ["TIMEOUT_HEADER", "AsyncHttpTransport", "HttpTransport", "decode_http_response",
           "encode_http_request"]

Array = npt.NDArray[Any]

#: The request header that carries the client's timeout to the gateway (milliseconds).
TIMEOUT_HEADER = "sonic-timeout-ms"

HTTP_STATUS_CODES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: Connect and per-read/write limits when a call gives no timeout (``timeout=None``).
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0


def _require_httpx() -> None:
    require("httpx", "http", "The HTTP transport (http:// and https:// gateway urls)")


def encode_http_request(arrays: Mapping[str, Array], outputs: Sequence[str] | None,
                        request_id: str, timeout: float | None = None) -> tuple[bytes, int]:
    """(body, json header length) for a binary-tensor inference request.

    ``timeout`` (seconds) travels as Triton's ``"timeout"`` request parameter, in microseconds.
    """
    specs: list[dict[str, Any]] = []
    blobs: list[bytes | memoryview] = []
    for name, arr in arrays.items():
        datatype = np_to_triton_dtype(arr.dtype)
        blob: bytes | memoryview
        if datatype == "BYTES":
            serialized = serialize_byte_tensor(arr)
            blob = serialized.item() if serialized.size > 0 else b""
            size = len(blob)
        else:
            # The array's own buffer: the join below is the one copy of the tensor data.
            blob = np.ascontiguousarray(arr).data
            size = blob.nbytes
        specs.append({"name": name, "shape": list(arr.shape), "datatype": datatype,
                      "parameters": {"binary_data_size": size}})
        blobs.append(blob)
    header: dict[str, Any] = {"id": request_id, "inputs": specs}
    parameters: dict[str, Any] = {}
    if timeout is not None:
        parameters["timeout"] = _microseconds(timeout)
    if outputs:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    else:
        parameters["binary_data_output"] = True
    if parameters:
        header["parameters"] = parameters
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([head, *blobs]), len(head)


def _microseconds(seconds: float) -> int:
    return max(1, round(seconds * 1e6))


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1e3))


def decode_http_response(body: bytes, header_length: int | None) -> dict[str, Array]:
    head = json.loads(body[:header_length] if header_length is not None else body)
    offset = header_length or 0
    out: dict[str, Array] = {}
    for spec in head.get("outputs", []):
        datatype = spec["datatype"]
        shape = [int(d) for d in spec["shape"]]
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset:offset + int(size)]
            offset += int(size)
            if datatype == "BYTES":
                arr = deserialize_bytes_tensor(raw)
            else:
                arr = np.frombuffer(raw, dtype=triton_to_np_dtype(datatype))
        else:
            np_dtype = np.object_ if datatype == "BYTES" else triton_to_np_dtype(datatype)
            arr = np.array(spec["data"], dtype=np_dtype)
        out[spec["name"]] = arr.reshape(shape)
    return out


def _http_error(response: httpx.Response) -> InferenceError:
    try:
        message = str(response.json().get("error", response.text))
    except (ValueError, AttributeError):
        message = response.text or response.reason_phrase
    return InferenceError(
        message, code=HTTP_STATUS_CODES.get(response.status_code, "UNKNOWN"),
        http_status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _http_exception(exc: httpx.HTTPError) -> InferenceError:
    """A transport failure as a status: the gateway unreachable, or the connection refused, reset
    or closed under the request (a restart, a rolling update) is UNAVAILABLE and retried."""
    import httpx

    if isinstance(exc, httpx.ConnectTimeout | httpx.NetworkError | httpx.RemoteProtocolError):
        return InferenceError(f"cannot reach the server: {type(exc).__name__}: {exc}",
                              code="UNAVAILABLE")
    if isinstance(exc, httpx.TimeoutException):
        return InferenceError(f"deadline exceeded: {type(exc).__name__}: {exc}",
                              code="DEADLINE_EXCEEDED")
    return InferenceError(f"{type(exc).__name__}: {exc}", code="UNKNOWN")


def _deadline_headers(headers: Mapping[str, str], timeout: float | None) -> dict[str, str]:
    hdrs = dict(headers)
    if timeout is not None:
        hdrs[TIMEOUT_HEADER] = str(_milliseconds(timeout))
    return hdrs


def _http_encode(model: str, arrays: Mapping[str, Array], *, model_version: str,
                 outputs: Sequence[str] | None, request_id: str, timeout: float | None,
                 use_gzip: bool) -> tuple[tuple[str, bytes, dict[str, str]], float]:
    """((path, body, headers of the body), seconds spent encoding) of an ``/infer`` request,
    encoded (and gzipped) once and sent by every attempt with that attempt's headers."""
    t0 = time.perf_counter()
    body, head_len = encode_http_request(arrays, outputs, request_id, timeout)
    hdrs = _deadline_headers({}, timeout)
    hdrs["Inference-Header-Content-Length"] = str(head_len)
    hdrs["Content-Type"] = "application/octet-stream"
    hdrs["Accept-Encoding"] = "gzip"
    if use_gzip:
        body = gzip.compress(body, compresslevel=6)
        hdrs["Content-Encoding"] = "gzip"
    path = _model_path(model, model_version) + "/infer"
    return (path, body, hdrs), time.perf_counter() - t0


def _http_infer_response(response: httpx.Response) -> dict[str, Array]:
    if response.status_code != 200:
        raise _http_error(response)
    head_len = response.headers.get("inference-header-content-length")
    return decode_http_response(response.content, int(head_len) if head_len else None)


def _http_json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise _http_error(response)
    data = response.json()
    return dict(data) if isinstance(data, dict) else {"value": data}


def _default_timeout() -> httpx.Timeout:
    import httpx

    return httpx.Timeout(DEFAULT_TIMEOUT_S, connect=DEFAULT_CONNECT_TIMEOUT_S)


def _t(timeout: float | None) -> Any:
    """A per-call timeout, or the pooled client's default when none was given."""
    import httpx

    return httpx.USE_CLIENT_DEFAULT if timeout is None else timeout


def _model_path(model: str, version: str) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


class HttpTransport:
    """KServe v2 REST over one pooled ``httpx.Client``."""

    def __init__(self, base_url: str, *, verify: bool | str = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        _require_httpx()
        import httpx

        self._client = httpx.Client(base_url=base_url, verify=verify, transport=transport,
                                    timeout=_default_timeout())

    encode = staticmethod(_http_encode)

    def send(self, request: tuple[str, bytes, dict[str, str]], headers: Mapping[str, str],
             timeout: float | None) -> dict[str, Array]:
        """One attempt of an encoded ``/infer`` request, with this attempt's headers."""
        import httpx

        path, body, body_headers = request
        try:
            response = self._client.post(path, content=body, headers={**headers, **body_headers},
                                         timeout=_t(timeout))
        except httpx.HTTPError as exc:
            raise _http_exception(exc) from None
        return _http_infer_response(response)

    def _get(self, path: str, headers: Mapping[str, str], timeout: float | None) -> httpx.Response:
        import httpx

        try:
            return self._client.get(path, headers=_deadline_headers(headers, timeout),
                                    timeout=_t(timeout))
        except httpx.HTTPError as exc:
            raise _http_exception(exc) from None

    def server_metadata(self, headers: Mapping[str, str], timeout: float | None) -> dict[str, Any]:
        return _http_json(self._get("/v2", headers, timeout))

    def model_metadata(self, model: str, version: str, headers: Mapping[str, str],
                       timeout: float | None) -> dict[str, Any]:
        return _http_json(self._get(_model_path(model, version), headers, timeout))

    def is_server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        return self._get("/v2/health/ready", headers, timeout).status_code == 200

    def close(self) -> None:
        self._client.close()


class AsyncHttpTransport:
    """KServe v2 REST over one pooled ``httpx.AsyncClient``."""

    def __init__(self, base_url: str, *, verify: bool | str = True,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        _require_httpx()
        import httpx

        self._client = httpx.AsyncClient(base_url=base_url, verify=verify, transport=transport,
                                         timeout=_default_timeout())

    encode = staticmethod(_http_encode)

    async def send(self, request: tuple[str, bytes, dict[str, str]], headers: Mapping[str, str],
                   timeout: float | None) -> dict[str, Array]:
        """One attempt of an encoded ``/infer`` request, with this attempt's headers."""
        import httpx

        path, body, body_headers = request
        try:
            response = await self._client.post(path, content=body, headers={**headers, **body_headers},
                                               timeout=_t(timeout))
        except httpx.HTTPError as exc:
            raise _http_exception(exc) from None
        return _http_infer_response(response)

    async def _get(self, path: str, headers: Mapping[str, str],
                   timeout: float | None) -> httpx.Response:
        import httpx

        try:
            return await self._client.get(path, headers=_deadline_headers(headers, timeout),
                                          timeout=_t(timeout))
        except httpx.HTTPError as exc:
            raise _http_exception(exc) from None

    async def server_metadata(self, headers: Mapping[str, str],
                              timeout: float | None) -> dict[str, Any]:
        return _http_json(await self._get("/v2", headers, timeout))

    async def model_metadata(self, model: str, version: str, headers: Mapping[str, str],
                             timeout: float | None) -> dict[str, Any]:
        return _http_json(await self._get(_model_path(model, version), headers, timeout))

    async def is_server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        return (await self._get("/v2/health/ready", headers, timeout)).status_code == 200

    async def close(self) -> None:
        await self._client.aclose()
