from __future__ import annotations

import numpy as np
import pytest

import sonic_client
from sonic_client import Provenance
from sonic_client._batching import reassemble, split_batches
from sonic_client._client import _gzip_pays, _link_gbit_s, _parse_url
from sonic_client.protodune import (
    INPUT_NAME,
    PATCH_SIZE,
    extract_patches,
    find_hits,
    generate_event,
)


def test_public_api() -> None:
    assert sorted(sonic_client.__all__) == sorted(
        ["DEFAULT_URL", "RETRYABLE_CODES", "AsyncClient", "Client", "Compression",
         "DiscoveredToken", "FileToken", "InferResult", "InferStats", "InferenceError",
         "MissingDependencyError", "OAuth2TokenProvider", "Provenance", "RetryPolicy",
         "SonicClientError", "StaticToken", "TokenExpiredError", "TokenNotFoundError",
         "TokenProvider", "TokenRefreshError", "__version__",
         "discover_token", "token_expiry"])
    for name in sonic_client.__all__:
        assert hasattr(sonic_client, name), name


def test_batching_split_and_reassemble() -> None:
    a = np.arange(10)
    b = np.arange(20).reshape(10, 2)
    parts = split_batches({"a": a, "b": b}, 3)
    assert [len(p["a"]) for p in parts] == [3, 3, 3, 1]
    back = reassemble(parts)
    np.testing.assert_array_equal(back["a"], a)
    np.testing.assert_array_equal(back["b"], b)
    assert len(split_batches({"a": a}, None)) == 1
    with pytest.raises(ValueError, match="disagree"):
        split_batches({"a": a, "b": b[:5]}, 2)
    with pytest.raises(ValueError, match="positive"):
        split_batches({"a": a}, 0)


def test_provenance_resolution() -> None:
    assert Provenance.resolve(environ={}) == Provenance(None, None)
    env = {"SONIC_JOB_ID": "sj", "CONDOR_JOBID": "12.0", "SONIC_DATASET": "ds"}
    assert Provenance.resolve(environ=env) == Provenance("sj", "ds")
    assert Provenance.resolve("explicit", "d2", environ=env) == Provenance("explicit", "d2")
    assert Provenance.resolve(environ={"CONDOR_JOBID": "12.0", "SLURM_JOB_ID": "5"}).job_id == "condor:12.0"
    assert Provenance("j", "dätaset").headers() == {"sonic-job-id": "j", "sonic-dataset": "d%C3%A4taset"}


def test_gzip_pays_below_the_break_even_link() -> None:
    # Break-even at ratio 25: (1 - 1/25) * 8 Mbit / 12 ms ~ 0.64 Gbit/s.
    assert _gzip_pays(25.0, 0.5) is True
    assert _gzip_pays(25.0, 0.8) is False
    assert _gzip_pays(25.0, None) is True  # link unknown: compressible data is compressed
    assert _gzip_pays(3.0, None) is False  # below compression_min_ratio: never
    assert _gzip_pays(3.0, 0.01) is False
    assert _gzip_pays(3.0, 0.01, min_ratio=2.0) is True


def test_link_hint_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONIC_LINK_GBIT_S", raising=False)
    assert _link_gbit_s(None) is None
    assert _link_gbit_s(2.5) == 2.5
    monkeypatch.setenv("SONIC_LINK_GBIT_S", "0.25")
    assert _link_gbit_s(None) == 0.25
    assert _link_gbit_s(1.0) == 1.0  # the argument wins
    monkeypatch.setenv("SONIC_LINK_GBIT_S", "fast")
    with pytest.raises(ValueError, match="SONIC_LINK_GBIT_S='fast' is not a number"):
        _link_gbit_s(None)
    with pytest.raises(ValueError, match="positive"):
        _link_gbit_s(0.0)


def test_parse_url() -> None:
    assert _parse_url("h:8001", None) == ("grpc", "h:8001", False)
    assert _parse_url("grpcs://h:443", None) == ("grpc", "h:443", True)
    assert _parse_url("http://h:8000/", None) == ("http", "http://h:8000", False)
    assert _parse_url("h:8000", "http") == ("http", "h:8000", False)
    with pytest.raises(ValueError, match="scheme"):
        _parse_url("ftp://h", None)


def test_protodune_patches() -> None:
    ev = generate_event(3, n_wires=240, n_ticks=800)
    assert ev.image.dtype == np.float32
    assert np.count_nonzero(ev.image) / ev.image.size < 0.1  # zero-suppressed: mostly zeros
    hits = find_hits(ev.image)
    assert len(hits) > 50
    patches = extract_patches(ev.image, hits)
    assert patches.shape == (len(hits), PATCH_SIZE, PATCH_SIZE, 1)
    assert patches.dtype == np.float32
    assert patches.flags.c_contiguous
    w, t = hits[0]
    assert patches[0, 24, 24, 0] == ev.image[w, t]  # the hit sits at the patch centre
    np.testing.assert_array_equal(patches[0, :, :, 0][24 - min(w, 24):, 24 - min(t, 24):][:1, :1],
                                  ev.image[max(w - 24, 0):max(w - 24, 0) + 1,
                                           max(t - 24, 0):max(t - 24, 0) + 1])
    assert np.count_nonzero(patches) / patches.size < 0.5
    assert INPUT_NAME == "main_input"
    again = generate_event(3, n_wires=240, n_ticks=800)
    np.testing.assert_array_equal(again.image, ev.image)  # seeded: reproducible
