"""gRPC transports: one request (one batch) through tritonclient's gRPC client, sync and asyncio.

Each transport turns failures into :class:`InferenceError` with the gRPC status name and the
server's ``retry-after`` hint; retrying, batching and headers are the client's business. The HTTP
transports live in :mod:`sonic_client._http` (they need the ``http`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy.typing as npt
from tritonclient.utils import np_to_triton_dtype

from ._errors import InferenceError
from ._retry import parse_retry_after

__all__ = ["CHANNEL_ARGS", "AsyncGrpcTransport", "GrpcTransport"]

Array = npt.NDArray[Any]

#: Channel options of every client channel: tritonclient's own defaults (unlimited message sizes,
#: its keepalive settings) plus a short reconnect backoff. gRPC's default reconnect backoff starts
#: at 1 s and grows 1.6x per failed connection attempt up to 120 s, and while a channel waits
#: between attempts every call on it fails at once with UNAVAILABLE, however often the client
#: retries: after a one-minute gateway restart the channel could sit out another ~40 s before it
#: even tried to connect. Capped at 1 s, a job reconnects within about a second of the gateway
#: listening again (a refused connection costs the gateway host one SYN/RST per job per second).
#: DNS is re-resolved at most once a second after a failure (default 30 s), so a rolling update
#: that moves the gateway to new addresses is followed as soon as DNS says so.
CHANNEL_ARGS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 2**31 - 1),
    ("grpc.keepalive_timeout_ms", 20000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 2),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
)


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


def _grpc_encode(model: str, arrays: Mapping[str, Array], *, model_version: str,
                 outputs: Sequence[str] | None, request_id: str, timeout: float | None,
                 use_gzip: bool) -> tuple[tuple[str, list[Any], dict[str, Any]], float]:
    """((model, inputs, infer() keywords but headers), seconds spent encoding); the tensors are
    serialised into the InferInputs here, once, and reused by every attempt."""
    t0 = time.perf_counter()
    inputs = _grpc_inputs(arrays)
    encode_s = time.perf_counter() - t0
    kwargs = {
        "model_version": model_version,
        "outputs": _grpc_outputs(outputs),
        "request_id": request_id,
        "client_timeout": timeout,
        "compression_algorithm": "gzip" if use_gzip else None,
    }
    return (model, inputs, kwargs), encode_s


class GrpcTransport:
    """One ``tritonclient.grpc.InferenceServerClient`` (one channel) shared by every call."""

    def __init__(self, target: str, *, ssl: bool, root_certificates: str | None) -> None:
        from tritonclient.grpc import InferenceServerClient

        self._client = InferenceServerClient(target, ssl=ssl, root_certificates=root_certificates,
                                             channel_args=list(CHANNEL_ARGS))

    encode = staticmethod(_grpc_encode)

    def send(self, request: tuple[str, list[Any], dict[str, Any]], headers: Mapping[str, str],
             timeout: float | None) -> dict[str, Array]:
        """One attempt of an encoded request (``timeout`` is already in it)."""
        model, inputs, kwargs = request
        try:
            result = self._client.infer(model, inputs, headers=dict(headers), **kwargs)
        except Exception as exc:
            raise _grpc_error(exc) from None
        return _grpc_result(result)

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
                                                 root_certificates=self._root,
                                                 channel_args=list(CHANNEL_ARGS))
        return self._client

    encode = staticmethod(_grpc_encode)

    async def send(self, request: tuple[str, list[Any], dict[str, Any]],
                   headers: Mapping[str, str], timeout: float | None) -> dict[str, Array]:
        """One attempt of an encoded request (``timeout`` is already in it)."""
        model, inputs, kwargs = request
        try:
            result = await self._get().infer(model, inputs, headers=dict(headers), **kwargs)
        except Exception as exc:
            raise _grpc_error(exc) from None
        return _grpc_result(result)

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
