from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import numpy as np
import pytest

from sonic_client import AsyncClient, Client, InferenceError, RetryPolicy
from sonic_client.protodune import extract_patches, find_hits, generate_event

FakeTriton = Any  # the fixture type lives in conftest.py (not importable as a module)

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.005)


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    ev = generate_event(7)
    return extract_patches(ev.image, find_hits(ev.image))[:700]


def test_infer_roundtrip_headers_and_provenance(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    with Client(fake_triton.url, token="good-token", job_id="job-42", dataset="pdsp-run5387",
                retry=FAST) as c:
        out = c.infer("emtrack_michel", {"main_input": patches[:10]})
    np.testing.assert_array_equal(out["identity"], patches[:10])
    assert out["em_trk_none_netout"].shape == (10, 3)
    md = fake_triton.metadata[-1]
    assert md["authorization"] == "Bearer good-token"
    assert md["sonic-job-id"] == "job-42"
    assert md["sonic-dataset"] == "pdsp-run5387"
    assert len(md["x-request-id"]) == 32
    assert fake_triton.request_ids[-1] == md["x-request-id"]


def test_provenance_from_env(fake_triton: FakeTriton, monkeypatch: pytest.MonkeyPatch,
                             patches: np.ndarray) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    monkeypatch.setenv("SONIC_DATASET", "np04_raw")
    with Client(fake_triton.url, token="good-token") as c:
        c.infer("emtrack_michel", {"main_input": patches[:2]}, outputs=["michel_netout"])
    md = fake_triton.metadata[-1]
    assert md["sonic-job-id"] == "slurm:991"
    assert md["sonic-dataset"] == "np04_raw"


@pytest.mark.parametrize(("batch_size", "concurrency"), [(235, 4), (64, 3), (1693, 2), (1, 1)])
def test_batching_reassembles_in_order(fake_triton: FakeTriton, patches: np.ndarray,
                                       batch_size: int, concurrency: int) -> None:
    data = patches[:300] if batch_size == 1 else patches
    if batch_size == 1:
        data = data[:20]
    with Client(fake_triton.url, token="good-token", retry=FAST) as c:
        whole = c.infer("emtrack_michel", {"main_input": data})
        split = c.infer("emtrack_michel", {"main_input": data}, batch_size=batch_size,
                        concurrency=concurrency)
    n = len(data)
    expected_batches = -(-n // batch_size)
    assert split.stats.n_batches == expected_batches
    assert sorted(fake_triton.batch_sizes[1:]) == sorted(
        [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else []))
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name])
    np.testing.assert_array_equal(split["identity"], data)
    # every batch is its own request with its own id
    assert len(set(fake_triton.request_ids)) == len(fake_triton.request_ids)


def test_single_array_uses_model_metadata(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    with Client(f"grpc://{fake_triton.url}", token="good-token") as c:
        out = c.infer("emtrack_michel", patches[:5])
        assert c.server_metadata()["name"] == "fake-triton"
        assert c.model_metadata("emtrack_michel")["inputs"][0]["name"] == "main_input"
        assert c.is_server_ready() is True
    np.testing.assert_array_equal(out["identity"], patches[:5])


@pytest.mark.parametrize("compression", [None, "gzip", "auto"])
def test_compression_on_off_equal(fake_triton: FakeTriton, patches: np.ndarray,
                                  compression: str | None) -> None:
    with Client(fake_triton.url, token="good-token", compression=compression) as c:  # type: ignore[arg-type]
        out = c.infer("emtrack_michel", {"main_input": patches}, batch_size=235)
    np.testing.assert_array_equal(out["identity"], patches)
    assert out.stats.compression == ("none" if compression is None else "gzip")


def test_auto_compression_skips_incompressible(fake_triton: FakeTriton) -> None:
    noise = np.random.default_rng(0).normal(size=(50, 48, 48, 1)).astype(np.float32)
    with Client(fake_triton.url, token="good-token", compression="auto") as c:
        out = c.infer("emtrack_michel", {"main_input": noise})
    assert out.stats.compression == "none"
    np.testing.assert_array_equal(out["identity"], noise)


@pytest.mark.parametrize(("link", "expected"), [("10", "none"), ("0.1", "gzip")])
def test_auto_compression_weighs_the_link(fake_triton: FakeTriton, patches: np.ndarray,
                                          monkeypatch: pytest.MonkeyPatch, link: str,
                                          expected: str) -> None:
    """Sparse patches compress ~20x: worth it on a 100 Mbit/s share, a loss on a 10 Gbit/s one."""
    monkeypatch.setenv("SONIC_LINK_GBIT_S", link)
    with Client(fake_triton.url, token="good-token", compression="auto") as c:
        out = c.infer("emtrack_michel", {"main_input": patches}, batch_size=235)
    assert out.stats.compression == expected
    np.testing.assert_array_equal(out["identity"], patches)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_retries_then_succeeds(fake_triton: FakeTriton, patches: np.ndarray,
                               code: grpc.StatusCode) -> None:
    fake_triton.fail_next, fake_triton.fail_code = 3, code
    with Client(fake_triton.url, token="good-token", retry=FAST) as c:
        out = c.infer("emtrack_michel", {"main_input": patches[:4]})
    assert fake_triton.calls == 4
    assert out.stats.retries == 3
    ids = {md["x-request-id"] for md in fake_triton.metadata}
    assert len(ids) == 1  # retries of one request keep its id


def test_gives_up_after_max_attempts(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    fake_triton.fail_next = 10
    with Client(fake_triton.url, token="good-token", retry=FAST) as c, \
            pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": patches[:4]})
    assert info.value.code == "UNAVAILABLE"
    assert info.value.attempts == 4
    assert fake_triton.calls == 4


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.NOT_FOUND])
def test_never_retries_unfixable(fake_triton: FakeTriton, patches: np.ndarray,
                                 code: grpc.StatusCode) -> None:
    fake_triton.fail_next, fake_triton.fail_code = 1, code
    with Client(fake_triton.url, token="good-token", retry=FAST) as c, \
            pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": patches[:4]})
    assert info.value.code == code.name
    assert fake_triton.calls == 1


def test_unauthenticated_not_retried(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    with Client(fake_triton.url, token="bad", retry=FAST) as c, pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": patches[:1]})
    assert info.value.code == "UNAUTHENTICATED"
    assert fake_triton.calls == 1


def test_honours_retry_after(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    fake_triton.fail_next, fake_triton.fail_code = 1, grpc.StatusCode.RESOURCE_EXHAUSTED
    fake_triton.retry_after = "0.3"
    t0 = time.perf_counter()
    with Client(fake_triton.url, token="good-token", retry=FAST) as c:
        c.infer("emtrack_michel", {"main_input": patches[:2]})
    assert time.perf_counter() - t0 >= 0.3
    assert fake_triton.calls == 2


def test_unreachable_server_is_unavailable(patches: np.ndarray) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Client(f"127.0.0.1:{port}", token="t", retry=FAST, timeout=2) as c, \
            pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": patches[:1]})
    assert info.value.code == "UNAVAILABLE"
    assert info.value.attempts == 4


def test_token_rediscovered_per_request(fake_triton: FakeTriton, patches: np.ndarray,
                                        tmp_path: pytest.TempPathFactory,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    tok = tmp_path / "tok"  # type: ignore[operator]
    tok.write_text("bad\n")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(tok))
    with Client(fake_triton.url, retry=FAST) as c:
        with pytest.raises(InferenceError):
            c.infer("emtrack_michel", {"main_input": patches[:1]})
        tok.write_text("good-token\n")  # the token agent refreshed it
        c.infer("emtrack_michel", {"main_input": patches[:1]})


async def test_async_client_batches_and_retries(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    fake_triton.fail_next = 2
    async with AsyncClient(fake_triton.url, token="good-token", retry=FAST, job_id="a1") as c:
        out = await c.infer("emtrack_michel", {"main_input": patches}, batch_size=100,
                            concurrency=3, compression="gzip")
        meta = await c.model_metadata("emtrack_michel")
        single = await c.infer("emtrack_michel", patches[:3])
    np.testing.assert_array_equal(out["identity"], patches)
    assert out.stats.n_batches == 7
    assert out.stats.retries == 2
    assert meta["name"] == "emtrack_michel"
    np.testing.assert_array_equal(single["identity"], patches[:3])
    assert all(md["sonic-job-id"] == "a1" for md in fake_triton.metadata)


async def test_async_error_cancels_rest(fake_triton: FakeTriton, patches: np.ndarray) -> None:
    fake_triton.fail_next, fake_triton.fail_code = 1, grpc.StatusCode.INVALID_ARGUMENT
    async with AsyncClient(fake_triton.url, token="good-token", retry=FAST) as c:
        with pytest.raises(InferenceError):
            await c.infer("emtrack_michel", {"main_input": patches}, batch_size=50, concurrency=1)
        await asyncio.sleep(0)
    assert fake_triton.calls < 14
