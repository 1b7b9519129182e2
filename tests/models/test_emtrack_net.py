"""The EmTrackMichelId network definition (model_repository/emtrack_michel/1/emtrack_net.py).

The module is pure NumPy and is loaded by path, exactly the file Triton serves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

Array = npt.NDArray[np.float32]

NET_PATH = (
    Path(__file__).resolve().parents[2] / "model_repository" / "emtrack_michel" / "1" / "emtrack_net.py"
)


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so type annotations / dataclasses can resolve the module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def en() -> ModuleType:
    return _load(NET_PATH, "emtrack_net_under_test")


@pytest.fixture(scope="module")
def net(en: ModuleType) -> Any:
    return en.EmTrackNet.from_seed()


@pytest.fixture(scope="module")
def patches(en: ModuleType) -> Array:
    x: Array = en.synthetic_patches(40, seed=3)
    return x


def test_parameter_count_matches_the_paper(en: ModuleType, net: Any) -> None:
    assert en.param_count() == 11_900_420
    assert net.param_count() == 11_900_420
    per_layer = {k: int(np.prod(s)) for k, s in en.PARAM_SHAPES.items()}
    assert per_layer["conv_w"] + per_layer["conv_b"] == 5 * 5 * 48 + 48
    assert en.PARAM_SHAPES["fc1_w"] == (44 * 44 * 48, 128)
    assert all(v.dtype == np.float32 for v in net.params.values())


def test_output_shapes_and_dtypes(net: Any, patches: Array) -> None:
    for n in (1, 7):
        classes, michel = net.forward(patches[:n])
        assert classes.shape == (n, 3)
        assert michel.shape == (n, 1)
        assert classes.dtype == np.float32
        assert michel.dtype == np.float32
    classes, michel = net.forward(patches[:0])
    assert classes.shape == (0, 3)
    assert michel.shape == (0, 1)


def test_softmax_rows_sum_to_one_and_sigmoid_in_open_interval(net: Any, patches: Array) -> None:
    classes, michel = net.forward(patches)
    np.testing.assert_allclose(classes.sum(axis=1), 1.0, atol=1e-5)
    assert (classes >= 0).all()
    assert ((michel > 0) & (michel < 1)).all()


def test_outputs_spread_across_classes(en: ModuleType, net: Any) -> None:
    """Untrained but calibrated: different patches land in different classes (a demo shows variety)."""
    classes, michel = net.forward(en.synthetic_patches(120, seed=11))
    counts = np.bincount(classes.argmax(axis=1), minlength=3)
    assert (counts > 0).all(), counts
    assert michel.std() > 0.05


def test_weights_are_deterministic(en: ModuleType, net: Any, patches: Array) -> None:
    again = en.EmTrackNet.from_seed()
    for name, value in net.params.items():
        np.testing.assert_array_equal(again.params[name], value, err_msg=name)
    a = net.forward(patches[:5])
    b = again.forward(patches[:5])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    other = en.EmTrackNet.from_seed(seed=1, calibrate=False)
    assert not np.array_equal(other.params["conv_w"], net.params["conv_w"])


def test_synthetic_patches_are_deterministic(en: ModuleType) -> None:
    a = en.synthetic_patches(6, seed=5)
    assert a.shape == (6, 48, 48, 1)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, en.synthetic_patches(6, seed=5))


def test_chunked_forward_equals_unchunked(net: Any, patches: Array) -> None:
    whole = net.forward(patches, chunk_size=len(patches))
    for chunk in (1, 7, 16):
        parts = net.forward(patches, chunk_size=chunk)
        np.testing.assert_allclose(parts[0], whole[0], atol=1e-5)  # float32 BLAS blocking differs
        np.testing.assert_allclose(parts[1], whole[1], atol=1e-5)


def _naive_conv(x: Array, w: Array, b: Array) -> npt.NDArray[np.float64]:
    """Cross-correlation straight from the definition: one output pixel at a time, float64."""
    n, h, wd, _ = x.shape
    kh, kw, _, f = w.shape
    out = np.zeros((n, h - kh + 1, wd - kw + 1, f))
    w64 = w[:, :, 0, :].astype(np.float64)
    for i in range(n):
        for r in range(h - kh + 1):
            for c in range(wd - kw + 1):
                window = x[i, r : r + kh, c : c + kw, 0].astype(np.float64)
                out[i, r, c] = np.tensordot(window, w64, axes=([0, 1], [0, 1])) + b
    return out


def test_fast_conv_matches_naive_correlation(en: ModuleType, net: Any, patches: Array) -> None:
    x = patches[:2]
    w, b = net.params["conv_w"], net.params["conv_b"]
    ref = _naive_conv(x, w, b)
    np.testing.assert_allclose(en.conv2d_valid(x, w, b), ref, atol=1e-5)
    cm = en.conv2d_channel_major(x, w, b)  # [F, N, 44*44]
    np.testing.assert_allclose(cm.reshape(48, 2, 44, 44).transpose(1, 2, 3, 0), ref, atol=1e-5)


def test_fast_conv_is_a_correlation_not_a_convolution(en: ModuleType) -> None:
    """A single bright pixel reproduces the kernel flipped (Keras Conv2D semantics)."""
    x = np.zeros((1, 48, 48, 1), dtype=np.float32)
    x[0, 10, 20, 0] = 1.0
    w = np.arange(25, dtype=np.float32).reshape(5, 5, 1, 1)
    out = en.conv2d_valid(x, w, np.zeros(1, dtype=np.float32))
    np.testing.assert_array_equal(out[0, 6:11, 16:21, 0], w[::-1, ::-1, 0, 0])


def test_forward_matches_float64_reference_in_keras_layout(net: Any, patches: Array) -> None:
    """The fast path (channel-major conv feeding fc1) equals the textbook NHWC-flatten network."""
    p = {k: v.astype(np.float64) for k, v in net.params.items()}
    x = patches[:3]
    h = np.maximum(_naive_conv(x, net.params["conv_w"], net.params["conv_b"]), 0).reshape(3, -1)
    h = np.maximum(h @ p["fc1_w"] + p["fc1_b"], 0)
    h = np.maximum(h @ p["fc2_w"] + p["fc2_b"], 0)
    z = h @ p["em_trk_none_w"] + p["em_trk_none_b"]
    ref_classes = np.exp(z - z.max(axis=1, keepdims=True))
    ref_classes /= ref_classes.sum(axis=1, keepdims=True)
    ref_michel = 1 / (1 + np.exp(-(h @ p["michel_w"] + p["michel_b"])))
    classes, michel = net.forward(x)
    np.testing.assert_allclose(classes, ref_classes, atol=1e-4)
    np.testing.assert_allclose(michel, ref_michel, atol=1e-4)


def test_forward_accepts_nhw_and_rejects_wrong_shapes(net: Any, patches: Array) -> None:
    a = net.forward(patches[:2])
    b = net.forward(patches[:2, :, :, 0])
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError, match="48, 48, 1"):
        net.forward(np.zeros((2, 32, 32, 1), dtype=np.float32))
    with pytest.raises(ValueError, match="chunk_size"):
        net.forward(patches[:2], chunk_size=0)
