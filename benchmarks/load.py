"""Load generators in their own processes: tritonclient.grpc / tritonclient.http, one request at a time.

A :class:`LoadPool` keeps N spawned worker processes (each with one client per target, built once)
and runs a :class:`LoadSpec` on ``concurrency`` of them at once, all starting at the same instant.
Each worker sends blocking requests back to back, so ``concurrency`` is the number in flight.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import traceback
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Protocol = Literal["grpc", "http"]
PATCH_BYTES = 48 * 48 * 4


@dataclass(frozen=True)
class LoadSpec:
    url: str  # host:port
    model: str
    batch: int
    protocol: Protocol = "grpc"
    input_name: str = "INPUT0"
    outputs: tuple[str, ...] = ("OUTPUT0",)
    duration_s: float = 3.0
    max_requests: int = 1_000_000
    tokens: tuple[str, ...] = ()  # none: no header; one: cached token; many: a new one per request
    compression: str | None = None  # "gzip" for the client->server hop
    data: Literal["sparse", "protodune"] = "sparse"
    warmup: int = 1
    # Emulated reconstruction client (scale-out scenario): per event, sleep cpu_s, then send
    # patches_per_event patches in requests of ``batch``, one after the other (blocking, as in LArSoft).
    events: int = 0
    cpu_s: float = 0.0
    patches_per_event: int = 0


@dataclass
class WorkerResult:
    latencies: list[float] = field(default_factory=list)
    event_times: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    errors: int = 0
    first_error: str = ""
    request_bytes: int = 0


def make_patches(n: int, kind: str, seed: int = 0) -> npt.NDArray[np.float32]:
    if kind == "protodune":
        from sonic_client.protodune import extract_patches, find_hits, generate_event

        chunks: list[npt.NDArray[np.float32]] = []
        s = seed
        while sum(c.shape[0] for c in chunks) < n:
            event = generate_event(s)
            chunks.append(extract_patches(event.image, find_hits(event.image)))
            s += 1
        return np.ascontiguousarray(np.concatenate(chunks)[:n])
    from tests.support.patches import sparse_patches

    return sparse_patches(n, seed)


class _Target:
    """One client, its prepared inputs per batch size, and a blocking ``send``."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._inputs: dict[tuple[str, str, int], Any] = {}
        self._outputs: dict[tuple[str, ...], list[Any]] = {}
        if spec.protocol == "grpc":
            import tritonclient.grpc as tc

            self.tc: Any = tc
            self.client: Any = tc.InferenceServerClient(spec.url)
        else:
            import tritonclient.http as th

            self.tc = th
            self.client = th.InferenceServerClient(spec.url, connection_timeout=300, network_timeout=300)

    def outputs(self, names: tuple[str, ...]) -> list[Any]:
        if names not in self._outputs:
            if self.spec.protocol == "grpc":
                self._outputs[names] = [self.tc.InferRequestedOutput(o) for o in names]
            else:
                self._outputs[names] = [self.tc.InferRequestedOutput(o, binary_data=True) for o in names]
        return self._outputs[names]

    def inputs(self, spec: LoadSpec, n: int) -> Any:
        key = (spec.input_name, spec.data, n)
        if key not in self._inputs:
            data = make_patches(n, spec.data)
            inp = self.tc.InferInput(spec.input_name, list(data.shape), "FP32")
            if spec.protocol == "grpc":
                inp.set_data_from_numpy(data)
            else:
                inp.set_data_from_numpy(data, binary_data=True)
            self._inputs[key] = [inp]
        return self._inputs[key]

    def send(self, spec: LoadSpec, n: int, token: str | None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else None
        kwargs: dict[str, Any] = {"outputs": self.outputs(tuple(spec.outputs)), "headers": headers}
        if spec.protocol == "grpc":
            kwargs["compression_algorithm"] = spec.compression
            kwargs["client_timeout"] = 300
        else:
            kwargs["request_compression_algorithm"] = spec.compression
        self.client.infer(spec.model, self.inputs(spec, n), **kwargs)


def _run(targets: dict[tuple[str, str], _Target], spec: LoadSpec, start_at: float) -> WorkerResult:
    key = (spec.protocol, spec.url)
    if key not in targets:
        targets[key] = _Target(spec)
    target = targets[key]
    tokens = spec.tokens
    result = WorkerResult()
    count = 0

    def token() -> str | None:
        return tokens[count % len(tokens)] if tokens else None

    sizes = [spec.batch]
    if spec.events:
        full, rest = divmod(spec.patches_per_event, spec.batch)
        sizes = [spec.batch] * full + ([rest] if rest else [])
    for n in set(sizes):
        target.inputs(spec, n)
    for _ in range(spec.warmup):  # connection set-up and first-call costs stay out of the numbers
        target.send(spec, sizes[0], token())
        count += 1
    while time.time() < start_at:
        time.sleep(min(0.01, max(0.0, start_at - time.time())))
    result.started = time.perf_counter()
    deadline = result.started + spec.duration_s
    try:
        if spec.events:
            for _ in range(spec.events):
                t0 = time.perf_counter()
                time.sleep(spec.cpu_s)  # the emulated non-offloaded CPU work runs on its own core
                for n in sizes:
                    t1 = time.perf_counter()
                    target.send(spec, n, token())
                    result.latencies.append(time.perf_counter() - t1)
                    result.request_bytes += n * PATCH_BYTES
                    count += 1
                result.event_times.append(time.perf_counter() - t0)
        else:
            while count - spec.warmup < spec.max_requests:
                t1 = time.perf_counter()
                if t1 >= deadline:
                    break
                target.send(spec, spec.batch, token())
                result.latencies.append(time.perf_counter() - t1)
                result.request_bytes += spec.batch * PATCH_BYTES
                count += 1
    except Exception as exc:
        result.errors += 1
        result.first_error = f"{type(exc).__name__}: {exc}"[:500]
    result.finished = time.perf_counter()
    return result


def _worker(conn: Connection) -> None:
    targets: dict[tuple[str, str], _Target] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        spec_dict, start_at = message
        try:
            result = _run(targets, LoadSpec(**spec_dict), start_at)
            conn.send(("ok", asdict(result)))
        except Exception:
            conn.send(("error", traceback.format_exc()[-2000:]))


@dataclass
class LoadRun:
    spec: LoadSpec
    concurrency: int
    workers: list[WorkerResult]

    @property
    def latencies(self) -> list[float]:
        return [x for w in self.workers for x in w.latencies]

    @property
    def elapsed(self) -> float:
        return max(w.finished for w in self.workers) - min(w.started for w in self.workers)

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.workers)

    @property
    def first_error(self) -> str:
        return next((w.first_error for w in self.workers if w.first_error), "")


class LoadPool:
    """``size`` spawned worker processes; each run uses the first ``concurrency`` of them."""

    def __init__(self, size: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for i in range(size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child,), name=f"load-{i}", daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    @property
    def size(self) -> int:
        return len(self._procs)

    def run(self, spec: LoadSpec, concurrency: int, timeout_s: float | None = None) -> LoadRun:
        if concurrency > self.size:
            raise ValueError(f"concurrency {concurrency} exceeds the pool of {self.size} load processes")
        # Workers prepare their inputs and warm up, then all start together.
        start_at = time.time() + 0.5 + 0.02 * spec.batch * concurrency / 100
        for i, conn in enumerate(self._conns[:concurrency]):
            mine = asdict(spec)
            if len(spec.tokens) > 1:
                # Uncached auth: each process gets its own tokens and never sends one twice.
                mine["tokens"] = spec.tokens[i::concurrency]
                mine["max_requests"] = min(spec.max_requests, len(mine["tokens"]) - spec.warmup)
            conn.send((mine, start_at))
        limit = timeout_s if timeout_s is not None else spec.duration_s * 4 + 120
        deadline = time.monotonic() + limit
        results: list[WorkerResult] = []
        for conn in self._conns[:concurrency]:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                self.close()
                raise TimeoutError(f"a load process gave no result within {limit:.0f} s ({spec.model})")
            status, payload = conn.recv()
            if status != "ok":
                raise RuntimeError(f"load process failed:\n{payload}")
            results.append(WorkerResult(**payload))
        return LoadRun(spec, concurrency, results)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in self._procs:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
        self._conns.clear()
        self._procs.clear()

    def __enter__(self) -> LoadPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
