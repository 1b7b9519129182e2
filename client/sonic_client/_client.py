"""`Client` and `AsyncClient`: numpy in, numpy out, through the gateway."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ._batching import reassemble, split_batches
from ._errors import InferenceError
from ._http import AsyncHttpTransport, HttpTransport
from ._provenance import REQUEST_ID_HEADER, Provenance, new_request_id
from ._retry import RetryPolicy
from ._tokens import TokenProvider, as_provider, invalidate, token_source, unexpired_token
from ._transport import AsyncGrpcTransport, GrpcTransport

__all__ = ["DEFAULT_URL", "AsyncClient", "Client", "Compression", "InferResult", "InferStats"]

Array = npt.NDArray[Any]
Compression = Literal["gzip", "auto"] | None
Protocol_ = Literal["grpc", "http"]

#: Used when neither ``url=`` nor ``SONIC_GATEWAY_URL`` is given: the gateway's gRPC port.
DEFAULT_URL = "127.0.0.1:8001"

#: ``compression="auto"`` samples at most this many bytes of the first batch.
AUTO_SAMPLE_BYTES = 1 << 20

#: CPU that gRPC gzip costs per MB of tensors, the job's compression plus the gateway's inflation:
#: 11.7-12.6 ms/MB measured through the real gateway (``benchmarks`` gzip scenario).
GZIP_CPU_S_PER_MB = 0.012


@dataclass
class InferStats:
    """What one :meth:`Client.infer` call did.

    ``bytes_sent`` is the uncompressed tensor payload; ``encode_s`` the client CPU time spent
    building requests (summed over batches, including the compressibility probe of ``"auto"``);
    ``wall_s`` the call's elapsed time; ``retries`` the retried attempts over all batches.
    """

    n_items: int
    n_batches: int
    bytes_sent: int
    compression: str
    encode_s: float
    wall_s: float
    retries: int


class InferResult(dict[str, Array]):
    """The model's outputs by name (a ``dict`` of numpy arrays) plus :class:`InferStats`."""

    def __init__(self, outputs: Mapping[str, Array], stats: InferStats) -> None:
        super().__init__(outputs)
        self.stats = stats


def _parse_url(url: str | None, protocol: Protocol_ | None) -> tuple[Protocol_, str, bool]:
    """(protocol, target, tls). ``grpc://``, ``grpcs://``, ``http://``, ``https://`` or host:port."""
    url = url or os.environ.get("SONIC_GATEWAY_URL") or DEFAULT_URL
    scheme, sep, rest = url.partition("://")
    if not sep:
        proto: Protocol_ = protocol or "grpc"
        return proto, url.rstrip("/"), False
    scheme = scheme.lower()
    if scheme in ("grpc", "grpcs"):
        if protocol == "http":
            raise ValueError(f"url {url!r} is a gRPC url but protocol='http'")
        return "grpc", rest.rstrip("/"), scheme == "grpcs"
    if scheme in ("http", "https"):
        if protocol == "grpc":
            # host:port from an http(s) url, for people who paste the gateway's address.
            return "grpc", rest.rstrip("/"), scheme == "https"
        return "http", f"{scheme}://{rest.rstrip('/')}", scheme == "https"
    raise ValueError(f"unsupported url scheme {scheme!r} in {url!r} (use grpc, grpcs, http, https)")


def _as_inputs(inputs: Mapping[str, Array] | Array, single_input: str | None) -> dict[str, Array]:
    if isinstance(inputs, Mapping):
        return {str(k): np.asarray(v) for k, v in inputs.items()}
    if single_input is None:
        raise ValueError("pass inputs as {name: array} or give the input name")
    return {single_input: np.asarray(inputs)}


def _compression_ratio(batch: Mapping[str, Array]) -> float:
    """What zlib level 1 achieves on (up to 1 MiB of) the batch; 1.0 when there is nothing to probe."""
    raw = b"".join(np.ascontiguousarray(a).reshape(-1).view(np.uint8)[:AUTO_SAMPLE_BYTES].tobytes()
                   for a in batch.values() if a.dtype != np.object_)
    if not raw:
        return 1.0
    return len(raw) / max(1, len(zlib.compress(raw, 1)))


def _gzip_pays(ratio: float, link_gbit_s: float | None, min_ratio: float = 4.0) -> bool:
    """The ``"auto"`` rule: gzip when the data compresses (ratio >= min_ratio) and, when the job's
    share of the link is known, when the wire time it saves exceeds the CPU it costs.

    Per MB: saved = (1 - 1/ratio) * 8 Mbit / link; cost = :data:`GZIP_CPU_S_PER_MB`; break-even is
    about 0.5 Gbit/s at ratio 4 and 0.64 Gbit/s at the ~25 of sparse detector patches. Without a
    link figure, compressible data is compressed: grid jobs share their node's uplink, where a job's
    share is usually well below that.
    """
    if ratio < min_ratio:
        return False
    if link_gbit_s is None:
        return True
    saved_s_per_mb = (1.0 - 1.0 / ratio) * 8e6 / (link_gbit_s * 1e9)
    return saved_s_per_mb > GZIP_CPU_S_PER_MB


def _link_gbit_s(value: float | None) -> float | None:
    if value is None:
        env = os.environ.get("SONIC_LINK_GBIT_S", "").strip()
        if not env:
            return None
        try:
            value = float(env)
        except ValueError:
            raise ValueError(f"SONIC_LINK_GBIT_S={env!r} is not a number of Gbit/s (e.g. 0.5)") from None
    if not value > 0:
        raise ValueError(f"link_gbit_s must be a positive number of Gbit/s, not {value!r}")
    return value


def _nbytes(batch: Mapping[str, Array]) -> int:
    return int(sum(a.nbytes for a in batch.values()))


# A transport encodes a batch once (``encode``: the request, and the seconds it took) and sends
# the encoded request on every attempt (``send``, with that attempt's headers): retries through a
# gateway restart do not serialise, or gzip, the tensors again.
class _Sync(Protocol):
    def encode(self, model: str, arrays: Mapping[str, Array], *, model_version: str,
               outputs: Sequence[str] | None, request_id: str, timeout: float | None,
               use_gzip: bool) -> tuple[Any, float]: ...
    def send(self, request: Any, headers: Mapping[str, str],
             timeout: float | None) -> dict[str, Array]: ...
    def server_metadata(self, headers: Mapping[str, str], timeout: float | None) -> dict[str, Any]: ...
    def model_metadata(self, model: str, version: str, headers: Mapping[str, str],
                       timeout: float | None) -> dict[str, Any]: ...
    def is_server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool: ...
    def close(self) -> None: ...


@dataclass
class _Tries:
    """One call's retry state: tries made, when the first retryable failure was (the budget's
    start), and whether the token source was already re-read after a 401."""

    count: int = 0
    first_failure: float | None = None
    renewed: bool = False


class _Base:
    # The one constructor of Client and AsyncClient; each opens its own kind of transport.
    def __init__(
        self,
        url: str | None = None,
        *,
        protocol: Protocol_ | None = None,
        token: str | TokenProvider | None = None,
        job_id: str | None = None,
        dataset: str | None = None,
        batch_size: int | None = None,
        concurrency: int = 4,
        timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        compression: Compression = None,
        compression_min_ratio: float = 4.0,
        link_gbit_s: float | None = None,
        headers: Mapping[str, str] | None = None,
        root_certificates: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if compression not in (None, "gzip", "auto"):
            raise ValueError("compression must be None, 'gzip' or 'auto'")
        self.protocol, self.target, self.tls = _parse_url(url, protocol)
        self.url = self.target if self.protocol == "http" else (
            ("grpcs://" if self.tls else "grpc://") + self.target)
        self.token_provider: TokenProvider = as_provider(token)
        self.provenance = Provenance.resolve(job_id, dataset)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()
        self.compression: Compression = compression
        self.compression_min_ratio = compression_min_ratio
        self.link_gbit_s = _link_gbit_s(link_gbit_s)
        self._extra_headers = dict(headers or {})
        self._root_certificates = root_certificates
        self._auto_gzip: dict[str, bool] = {}
        self._input_names: dict[tuple[str, str], str] = {}
        self._rng = random.Random()  # noqa: S311 (backoff jitter)
        self._clock = clock
        self._wall_clock = wall_clock
        # Client: time.sleep-like; AsyncClient: an async asyncio.sleep-like.
        self._sleep: Callable[[float], Any] = sleep or self._default_sleep()
        self._open_transport()

    def _open_transport(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _default_sleep() -> Callable[[float], Any]:
        raise NotImplementedError

    # -- request pieces shared by sync and async -------------------------------------------------
    def _token(self) -> str:
        """The token to send now; an expired one is refused (TokenExpiredError)."""
        return unexpired_token(self.token_provider, self._wall_clock())

    def _after_failure(self, err: InferenceError, tries: _Tries) -> Literal["renew"] | float | None:
        """What the retry loops of :class:`Client` and :class:`AsyncClient` do after a failed try:
        ``"renew"`` (401 / UNAUTHENTICATED, the first time: re-read the token source with
        :meth:`_renewed_token` and retry at once), seconds to sleep before retrying with the token
        read again, or None to raise ``err`` (with a note of the retries made)."""
        err.attempts = tries.count
        if err.code == "UNAUTHENTICATED":
            if tries.renewed:
                return None
            tries.renewed = True
            return "renew"
        now = self._clock()
        if tries.first_failure is None:
            tries.first_failure = now
        elapsed = now - tries.first_failure
        wait = self.retry.next_delay(err.code, tries.count, elapsed, err.retry_after, self._rng)
        if wait is None and tries.count > 1:
            err.add_detail(f"gave up after {tries.count} attempts over {elapsed:.1f} s; "
                           f"retry budget {self.retry.budget:g} s")
        return wait

    def _renewed_token(self, rejected: str, err: InferenceError) -> str:
        """After a 401 / UNAUTHENTICATED: re-read the token source and return the new token, or
        raise ``err`` (with a note) when the source still holds the rejected one."""
        invalidate(self.token_provider)
        token = self._token()
        if token == rejected:
            source = token_source(self.token_provider) or "the token provider"
            err.add_detail(f"re-read {source}: it still holds the rejected token")
            raise err
        return token

    def _headers(self, token: str, request_id: str, job_id: str | None,
                 dataset: str | None) -> dict[str, str]:
        prov = self.provenance
        if job_id or dataset:
            prov = Provenance(job_id or prov.job_id, dataset or prov.dataset)
        headers = {**self._extra_headers, **prov.headers()}
        headers[REQUEST_ID_HEADER] = request_id
        headers["authorization"] = f"Bearer {token}"
        return headers

    def _plan(self, model: str, batches: list[dict[str, Array]],
              compression: Compression | Literal["default"]) -> tuple[bool, float]:
        """(use gzip, seconds spent deciding)."""
        mode = self.compression if compression == "default" else compression
        if mode is None:
            return False, 0.0
        if mode == "gzip":
            return True, 0.0
        if mode != "auto":
            raise ValueError("compression must be None, 'gzip' or 'auto'")
        if model in self._auto_gzip:
            return self._auto_gzip[model], 0.0
        t0 = time.perf_counter()
        ratio = _compression_ratio(batches[0])
        decision = _gzip_pays(ratio, self.link_gbit_s, self.compression_min_ratio)
        self._auto_gzip[model] = decision
        return decision, time.perf_counter() - t0

    def _input_name_from_metadata(self, meta: Mapping[str, Any], model: str) -> str:
        inputs = meta.get("inputs") or []
        if len(inputs) != 1:
            raise ValueError(f"model {model!r} has {len(inputs)} inputs: pass inputs as a dict")
        return str(inputs[0]["name"])


class Client(_Base):
    """Blocking client for one gateway (or any Triton/KServe v2 server).

    ``url``: ``host:port`` (gRPC), ``grpc://``, ``grpcs://`` (TLS), ``http://`` or ``https://``;
    default ``$SONIC_GATEWAY_URL`` or ``127.0.0.1:8001``. ``token``: a string, a
    :class:`TokenProvider`, or None for WLCG discovery (re-run on every request). ``job_id`` /
    ``dataset``: provenance sent with every request (default ``$SONIC_JOB_ID`` / ``$SONIC_DATASET``
    then batch-system ids). ``batch_size`` / ``concurrency``: defaults for :meth:`infer`.
    ``timeout``: per-request deadline in seconds (each attempt of each batch). ``retry``: the
    :class:`RetryPolicy` (default: retry UNAVAILABLE / RESOURCE_EXHAUSTED for up to 90 s, so a job
    rides out a gateway restart). ``clock`` / ``sleep`` / ``wall_clock``: the time services the
    retries and the token-expiry check use (monotonic seconds, ``time.sleep`` -- an async sleep
    for :class:`AsyncClient` -- and Unix time), injectable for tests. ``compression``:
    None, ``"gzip"`` or ``"auto"`` (gzip when the data compresses and, given ``link_gbit_s`` or
    ``$SONIC_LINK_GBIT_S``, the job's share of the link is slow enough for it to pay). One
    connection (gRPC channel or HTTP pool) serves every call; the client is thread-safe. Use as a
    context manager or call :meth:`close`.
    """

    @staticmethod
    def _default_sleep() -> Callable[[float], Any]:
        return time.sleep

    def _open_transport(self) -> None:
        self._transport: _Sync
        if self.protocol == "grpc":
            self._transport = GrpcTransport(self.target, ssl=self.tls,
                                            root_certificates=self._root_certificates)
        else:
            self._transport = HttpTransport(self.target, verify=self._root_certificates or True)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection and the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _executor(self, workers: int) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool._max_workers < workers:
                old, self._pool = self._pool, ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix="sonic-client")
                if old is not None:
                    old.shutdown(wait=False)
            return self._pool

    # -- calls ------------------------------------------------------------------------------------
    def _call(self, fn: Any, request_id: str, job_id: str | None = None,
              dataset: str | None = None) -> tuple[Any, int]:
        """Run ``fn(headers)`` with retries; returns (result, retries).

        Retryable failures are retried per :attr:`retry`; a 401 / UNAUTHENTICATED re-reads the
        token source once and, when that gives a different token, retries once at once.
        """
        tries = _Tries()
        token = self._token()
        while True:
            tries.count += 1
            try:
                return fn(self._headers(token, request_id, job_id, dataset)), tries.count - 1
            except InferenceError as err:
                step = self._after_failure(err, tries)
                if step is None:
                    raise
                if isinstance(step, str):
                    token = self._renewed_token(token, err)
                else:
                    self._sleep(step)
                    token = self._token()

    def server_metadata(self) -> dict[str, Any]:
        """The server's name, version and extensions (``GET /v2`` / ServerMetadata)."""
        result, _ = self._call(lambda h: self._transport.server_metadata(h, self.timeout),
                               new_request_id())
        return dict(result)

    def model_metadata(self, model: str, version: str = "") -> dict[str, Any]:
        """A model's inputs, outputs and versions (ModelMetadata)."""
        result, _ = self._call(
            lambda h: self._transport.model_metadata(model, version, h, self.timeout),
            new_request_id())
        return dict(result)

    def is_server_ready(self) -> bool:
        result, _ = self._call(lambda h: self._transport.is_server_ready(h, self.timeout),
                               new_request_id())
        return bool(result)

    def _single_input_name(self, model: str, version: str) -> str:
        key = (model, version)
        if key not in self._input_names:
            meta = self.model_metadata(model, version)
            self._input_names[key] = self._input_name_from_metadata(meta, model)
        return self._input_names[key]

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Array] | Array,
        *,
        outputs: Sequence[str] | None = None,
        model_version: str = "",
        batch_size: int | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        compression: Compression | Literal["default"] = "default",
        job_id: str | None = None,
        dataset: str | None = None,
    ) -> InferResult:
        """Run ``model`` on ``inputs`` ({name: array}, or one array for a single-input model).

        Inputs are cut along axis 0 into batches of ``batch_size`` (default: the client's; None
        sends everything in one request), sent with at most ``concurrency`` requests in flight,
        and the outputs are concatenated back in input order. Each request carries the token,
        provenance headers and its own ``x-request-id``, and is retried on UNAVAILABLE /
        RESOURCE_EXHAUSTED per the client's :class:`RetryPolicy`. The first failure that cannot be
        retried cancels the batches not yet sent and is raised as :class:`InferenceError`.
        """
        t_start = time.perf_counter()
        single = None if isinstance(inputs, Mapping) else self._single_input_name(model, model_version)
        arrays = _as_inputs(inputs, single)
        batches = split_batches(arrays, batch_size if batch_size is not None else self.batch_size)
        use_gzip, probe_s = self._plan(model, batches, compression)
        deadline = timeout if timeout is not None else self.timeout
        workers = concurrency if concurrency is not None else self.concurrency
        if workers < 1:
            raise ValueError("concurrency must be >= 1")

        def run(batch: dict[str, Array]) -> tuple[dict[str, Array], int, float]:
            request_id = new_request_id()
            request, enc = self._transport.encode(model, batch, model_version=model_version,
                                                  outputs=outputs, request_id=request_id,
                                                  timeout=deadline, use_gzip=use_gzip)
            out, retries = self._call(lambda h: self._transport.send(request, h, deadline),
                                      request_id, job_id, dataset)
            return out, retries, enc

        results: list[dict[str, Array] | None] = [None] * len(batches)
        retries = 0
        encode_s = probe_s
        if len(batches) == 1 or workers == 1:
            for i, batch in enumerate(batches):
                out, r, enc = run(batch)
                results[i] = out
                retries += r
                encode_s += enc
        else:
            pool = self._executor(workers)
            pending: dict[Future[tuple[dict[str, Array], int, float]], int] = {}
            todo = iter(enumerate(batches))
            try:
                for i, batch in todo:
                    pending[pool.submit(run, batch)] = i
                    if len(pending) >= workers:
                        r, enc = self._drain(pending, results)
                        retries, encode_s = retries + r, encode_s + enc
                while pending:
                    r, enc = self._drain(pending, results)
                    retries, encode_s = retries + r, encode_s + enc
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
        done = [r for r in results if r is not None]
        stats = InferStats(
            n_items=len(next(iter(arrays.values()))), n_batches=len(batches),
            bytes_sent=sum(_nbytes(b) for b in batches),
            compression="gzip" if use_gzip else "none", encode_s=encode_s,
            wall_s=time.perf_counter() - t_start, retries=retries)
        return InferResult(reassemble(done), stats)

    @staticmethod
    def _drain(pending: dict[Future[tuple[dict[str, Array], int, float]], int],
               results: list[dict[str, Array] | None]) -> tuple[int, float]:
        finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        retries, encode_s = 0, 0.0
        for fut in finished:
            i = pending.pop(fut)
            out, r, enc = fut.result()  # raises the batch's error
            results[i] = out
            retries, encode_s = retries + r, encode_s + enc
        return retries, encode_s



class _Async(Protocol):
    def encode(self, model: str, arrays: Mapping[str, Array], *, model_version: str,
               outputs: Sequence[str] | None, request_id: str, timeout: float | None,
               use_gzip: bool) -> tuple[Any, float]: ...
    async def send(self, request: Any, headers: Mapping[str, str],
                   timeout: float | None) -> dict[str, Array]: ...
    async def server_metadata(self, headers: Mapping[str, str],
                              timeout: float | None) -> dict[str, Any]: ...
    async def model_metadata(self, model: str, version: str, headers: Mapping[str, str],
                             timeout: float | None) -> dict[str, Any]: ...
    async def is_server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool: ...
    async def close(self) -> None: ...


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client` (same arguments, ``await`` every call).

    Batches run as tasks bounded by a semaphore of ``concurrency``; the gRPC channel is opened on
    first use inside the running loop. Token providers are called in a worker thread, so an OAuth2
    refresh does not block the loop. Use ``async with`` or ``await client.close()``.
    """

    @staticmethod
    def _default_sleep() -> Callable[[float], Any]:
        return asyncio.sleep

    def _open_transport(self) -> None:
        self._transport: _Async
        if self.protocol == "grpc":
            self._transport = AsyncGrpcTransport(self.target, ssl=self.tls,
                                                 root_certificates=self._root_certificates)
        else:
            self._transport = AsyncHttpTransport(self.target, verify=self._root_certificates or True)

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, fn: Any, request_id: str, job_id: str | None = None,
                    dataset: str | None = None) -> tuple[Any, int]:
        """The asyncio twin of :meth:`Client._call` (token reads run in a worker thread)."""
        tries = _Tries()
        token = await asyncio.to_thread(self._token)
        while True:
            tries.count += 1
            try:
                return await fn(self._headers(token, request_id, job_id, dataset)), tries.count - 1
            except InferenceError as err:
                step = self._after_failure(err, tries)
                if step is None:
                    raise
                if isinstance(step, str):
                    token = await asyncio.to_thread(self._renewed_token, token, err)
                else:
                    await self._sleep(step)
                    token = await asyncio.to_thread(self._token)

    async def server_metadata(self) -> dict[str, Any]:
        result, _ = await self._call(
            lambda h: self._transport.server_metadata(h, self.timeout), new_request_id())
        return dict(result)

    async def model_metadata(self, model: str, version: str = "") -> dict[str, Any]:
        result, _ = await self._call(
            lambda h: self._transport.model_metadata(model, version, h, self.timeout),
            new_request_id())
        return dict(result)

    async def is_server_ready(self) -> bool:
        result, _ = await self._call(
            lambda h: self._transport.is_server_ready(h, self.timeout), new_request_id())
        return bool(result)

    async def _single_input_name(self, model: str, version: str) -> str:
        key = (model, version)
        if key not in self._input_names:
            meta = await self.model_metadata(model, version)
            self._input_names[key] = self._input_name_from_metadata(meta, model)
        return self._input_names[key]

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Array] | Array,
        *,
        outputs: Sequence[str] | None = None,
        model_version: str = "",
        batch_size: int | None = None,
        concurrency: int | None = None,
        timeout: float | None = None,
        compression: Compression | Literal["default"] = "default",
        job_id: str | None = None,
        dataset: str | None = None,
    ) -> InferResult:
        """See :meth:`Client.infer`."""
        t_start = time.perf_counter()
        single = (None if isinstance(inputs, Mapping)
                  else await self._single_input_name(model, model_version))
        arrays = _as_inputs(inputs, single)
        batches = split_batches(arrays, batch_size if batch_size is not None else self.batch_size)
        use_gzip, probe_s = self._plan(model, batches, compression)
        deadline = timeout if timeout is not None else self.timeout
        workers = concurrency if concurrency is not None else self.concurrency
        if workers < 1:
            raise ValueError("concurrency must be >= 1")
        gate = asyncio.Semaphore(workers)

        async def run(batch: dict[str, Array]) -> tuple[dict[str, Array], int, float]:
            request_id = new_request_id()
            async with gate:
                request, enc = self._transport.encode(
                    model, batch, model_version=model_version, outputs=outputs,
                    request_id=request_id, timeout=deadline, use_gzip=use_gzip)
                out, retries = await self._call(
                    lambda h: self._transport.send(request, h, deadline), request_id, job_id,
                    dataset)
            return out, retries, enc

        tasks = [asyncio.ensure_future(run(b)) for b in batches]
        try:
            done = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        stats = InferStats(
            n_items=len(next(iter(arrays.values()))), n_batches=len(batches),
            bytes_sent=sum(_nbytes(b) for b in batches),
            compression="gzip" if use_gzip else "none",
            encode_s=probe_s + sum(d[2] for d in done),
            wall_s=time.perf_counter() - t_start, retries=sum(d[1] for d in done))
        return InferResult(reassemble([d[0] for d in done]), stats)
