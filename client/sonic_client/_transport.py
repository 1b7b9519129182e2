"""Wire transports: one request (one batch) over gRPC or HTTP, sync and asyncio.

Each transport turns failures into :class:`InferenceError` with a gRPC-style status name and the
server's ``retry-after`` hint; retrying, batching and headers are the client's business.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from tritonclient.utils import (
    deserialize_bytes_tensor,
    np_to_triton_dtype,
    serialize_byte_tensor,
    triton_to_np_dtype,
)

from ._errors import InferenceError
from ._retry import parse_retry_after

Array = npt.NDArray[Any]

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


# ----------------------------------------------------------------------------------------- gRPC
def _grpc_error(exc: BaseException) -> InferenceError:
    """Map a tritonclient InferenceServerException (or a bare grpc.RpcError) to InferenceError.

    tritonclient raises its exception inside ``except grpc.RpcError``, so the RpcError, with the
    trailing metadata that carries ``retry-after``, is the exception's ``__context__``.
    """
    import grpc

    rpc: Any = exc if isinstance(exc, grpc.RpcError) else exc.__context__
    code = "UNKNOWN"
    message = str(exc)
    retry_after: float | None = None
    if isinstance(rpc, grpc.RpcError) and hasattr(rpc, "code"):
        code = rpc.code().name
        message = rpc.details() or message
        try:
            trailing = rpc.trailing_metadata() or ()
        except Exception:  # a locally raised error may have none
            trailing = ()
        for key, value in trailing:
            if key.lower() == "retry-after":
                retry_after = parse_retry_after(value)
    else:
        status = getattr(exc, "status", None)
        raw = status() if callable(status) else None
        if isinstance(raw, str) and raw:
            code = raw.removeprefix("StatusCode.")
        msg = getattr(exc, "message", None)
        if callable(msg) and msg():
            message = str(msg())
    return InferenceError(message, code=code, retry_after=retry_after)


def _grpc_inputs(arrays: Mapping[str, Array]) -> list[Any]:
    from tritonclient.grpc import InferInput

    out = []
    for name, arr in arrays.items():
        inp = InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


def _grpc_outputs(outputs: Sequence[str] | None) -> list[Any] | None:
    if not outputs:
        return None
    from tritonclient.grpc import InferRequestedOutput

    return [InferRequestedOutput(name) for name in outputs]


def _grpc_result(result: Any) -> dict[str, Array]:
    response = result.get_response()
    return {o.name: result.as_numpy(o.name) for o in response.outputs}


def _grpc_kwargs(model_version: str, outputs: Sequence[str] | None, headers: Mapping[str, str],
                 request_id: str, timeout: float | None, use_gzip: bool) -> dict[str, Any]:
    return {
        "model_version": model_version,
        "outputs": _grpc_outputs(outputs),
        "request_id": request_id,
        "headers": dict(headers),
        "client_timeout": timeout,
        "compression_algorithm": "gzip" if use_gzip else None,
    }


class GrpcTransport:
    """One ``tritonclient.grpc.InferenceServerClient`` (one channel) shared by every call."""

    def __init__(self, target: str, *, ssl: bool, root_certificates: str | None) -> None:
        from tritonclient.grpc import InferenceServerClient

        self._client = InferenceServerClient(target, ssl=ssl, root_certificates=root_certificates)

    def infer(self, model: str, arrays: Mapping[str, Array], *, model_version: str,
              outputs: Sequence[str] | None, headers: Mapping[str, str], request_id: str,
              timeout: float | None, use_gzip: bool) -> tuple[dict[str, Array], float]:
        t0 = time.perf_counter()
        inputs = _grpc_inputs(arrays)
        encode_s = time.perf_counter() - t0
        try:
            result = self._client.infer(model, inputs, **_grpc_kwargs(
                model_version, outputs, headers, request_id, timeout, use_gzip))
        except Exception as exc:
            raise _grpc_error(exc) from None
        return _grpc_result(result), encode_s

    def server_metadata(self, headers: Mapping[str, str], timeout: float | None) -> dict[str, Any]:
        try:
            return dict(self._client.get_server_metadata(headers=dict(headers), as_json=True,
                                                         client_timeout=timeout))
        except Exception as exc:
            raise _grpc_error(exc) from None

    def model_metadata(self, model: str, version: str, headers: Mapping[str, str],
                       timeout: float | None) -> dict[str, Any]:
        try:
            return dict(self._client.get_model_metadata(model, version, headers=dict(headers),
                                                        as_json=True, client_timeout=timeout))
        except Exception as exc:
            raise _grpc_error(exc) from None

    def is_server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        try:
            return bool(self._client.is_server_ready(headers=dict(headers), client_timeout=timeout))
        except Exception as exc:
            raise _grpc_error(exc) from None

    def close(self) -> None:
        self._client.close()


class AsyncGrpcTransport:
    """``tritonclient.grpc.aio.InferenceServerClient``: created on first use, inside the loop."""

    def __init__(self, target: str, *, ssl: bool, root_certificates: str | None) -> None:
        self._target = target
        self._ssl = ssl
        self._root = root_certificates
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            from tritonclient.grpc.aio import InferenceServerClient

            self._client = InferenceServerClient(self._target, ssl=self._ssl,
                                                 root_certificates=self._root)
        return self._client

    async def infer(self, model: str, arrays: Mapping[str, Array], *, model_version: str,
                    outputs: Sequence[str] | None, headers: Mapping[str, str], request_id: str,
                    timeout: float | None, use_gzip: bool) -> tuple[dict[str, Array], float]:
        t0 = time.perf_counter()
        inputs = _grpc_inputs(arrays)
        encode_s = time.perf_counter() - t0
        try:
            result = await self._get().infer(model, inputs, **_grpc_kwargs(
                model_version, outputs, headers, request_id, timeout, use_gzip))
        except Exception as exc:
            raise _grpc_error(exc) from None
        return _grpc_result(result), encode_s

    async def server_metadata(self, headers: Mapping[str, str],
                              timeout: float | None) -> dict[str, Any]:
        try:
            return dict(await self._get().get_server_metadata(
                headers=dict(headers), as_json=True, client_timeout=timeout))
        except Exception as exc:
            raise _grpc_error(exc) from None

    async def model_metadata(self, model: str, version: str, headers: Mapping[str, str],
                             timeout: float | None) -> dict[str, Any]:
        try:
            return dict(await self._get().get_model_metadata(
                model, version, headers=dict(headers), as_json=True, client_timeout=timeout))
        except Exception as exc:
            raise _grpc_error(exc) from None

    async def is_server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        try:
            return bool(await self._get().is_server_ready(headers=dict(headers),
                                                          client_timeout=timeout))
        except Exception as exc:
            raise _grpc_error(exc) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


# ----------------------------------------------------------------------------------------- HTTP
# KServe v2 REST with Triton's binary-tensor extension, spoken through httpx: this keeps the
# Retry-After header (tritonclient.http drops response headers on errors) and needs no gevent.
def encode_http_request(arrays: Mapping[str, Array], outputs: Sequence[str] | None,
                        request_id: str) -> tuple[bytes, int]:
    """(body, json header length) for a binary-tensor inference request."""
    specs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in arrays.items():
        datatype = np_to_triton_dtype(arr.dtype)
        if datatype == "BYTES":
            serialized = serialize_byte_tensor(arr)
            blob = serialized.item() if serialized.size > 0 else b""
        else:
            blob = np.ascontiguousarray(arr).tobytes()
        specs.append({"name": name, "shape": list(arr.shape), "datatype": datatype,
                      "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header: dict[str, Any] = {"id": request_id, "inputs": specs}
    if outputs:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    else:
        header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)


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
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.RemoteProtocolError):
        return InferenceError(f"cannot reach the server: {exc}", code="UNAVAILABLE")
    if isinstance(exc, httpx.TimeoutException):
        return InferenceError(f"deadline exceeded: {exc}", code="DEADLINE_EXCEEDED")
    return InferenceError(f"{type(exc).__name__}: {exc}", code="UNKNOWN")


def _http_infer_request(model: str, arrays: Mapping[str, Array], model_version: str,
                        outputs: Sequence[str] | None, headers: Mapping[str, str],
                        request_id: str, use_gzip: bool) -> tuple[str, bytes, dict[str, str]]:
    body, head_len = encode_http_request(arrays, outputs, request_id)
    hdrs = dict(headers)
    hdrs["Inference-Header-Content-Length"] = str(head_len)
    hdrs["Content-Type"] = "application/octet-stream"
    hdrs["Accept-Encoding"] = "gzip"
    if use_gzip:
        body = gzip.compress(body, compresslevel=6)
        hdrs["Content-Encoding"] = "gzip"
    path = f"/v2/models/{model}" + (f"/versions/{model_version}" if model_version else "") + "/infer"
    return path, body, hdrs


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


_DEFAULT_HTTP_TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def _t(timeout: float | None) -> Any:
    """A per-call deadline, or the pooled client's default when none was given."""
    return httpx.USE_CLIENT_DEFAULT if timeout is None else timeout


def _model_path(model: str, version: str) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "")


class HttpTransport:
    """KServe v2 REST over one pooled ``httpx.Client``."""

    def __init__(self, base_url: str, *, verify: bool | str = True,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._client = httpx.Client(base_url=base_url, verify=verify, transport=transport,
                                    timeout=_DEFAULT_HTTP_TIMEOUT)

    def infer(self, model: str, arrays: Mapping[str, Array], *, model_version: str,
              outputs: Sequence[str] | None, headers: Mapping[str, str], request_id: str,
              timeout: float | None, use_gzip: bool) -> tuple[dict[str, Array], float]:
        t0 = time.perf_counter()
        path, body, hdrs = _http_infer_request(model, arrays, model_version, outputs, headers,
                                               request_id, use_gzip)
        encode_s = time.perf_counter() - t0
        try:
            response = self._client.post(path, content=body, headers=hdrs, timeout=_t(timeout))
        except httpx.HTTPError as exc:
            raise _http_exception(exc) from None
        return _http_infer_response(response), encode_s

    def _get(self, path: str, headers: Mapping[str, str], timeout: float | None) -> httpx.Response:
        try:
            return self._client.get(path, headers=dict(headers), timeout=_t(timeout))
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
        self._client = httpx.AsyncClient(base_url=base_url, verify=verify, transport=transport,
                                         timeout=_DEFAULT_HTTP_TIMEOUT)

    async def infer(self, model: str, arrays: Mapping[str, Array], *, model_version: str,
                    outputs: Sequence[str] | None, headers: Mapping[str, str], request_id: str,
                    timeout: float | None, use_gzip: bool) -> tuple[dict[str, Array], float]:
        t0 = time.perf_counter()
        path, body, hdrs = _http_infer_request(model, arrays, model_version, outputs, headers,
                                               request_id, use_gzip)
        encode_s = time.perf_counter() - t0
        try:
            response = await self._client.post(path, content=body, headers=hdrs, timeout=_t(timeout))
        except httpx.HTTPError as exc:
            raise _http_exception(exc) from None
        return _http_infer_response(response), encode_s

    async def _get(self, path: str, headers: Mapping[str, str],
                   timeout: float | None) -> httpx.Response:
        try:
            return await self._client.get(path, headers=dict(headers), timeout=_t(timeout))
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


__all__ = ["AsyncGrpcTransport", "AsyncHttpTransport", "GrpcTransport", "HttpTransport",
           "decode_http_response", "encode_http_request"]
