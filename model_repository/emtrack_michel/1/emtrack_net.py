"""EmTrackMichelId CNN in pure NumPy: parameter shapes, deterministic weights, forward pass.

This single module is the network definition shared by the Triton model (``model.py`` next to it)
and the unit tests (which load it by path with ``importlib``). It depends on NumPy only.

Architecture (ProtoDUNE-SP EmTrackMichelId, see the SONIC paper, section "Neural network"):

    main_input     [N, 48, 48, 1]  float32, NHWC
    conv 5x5, 48 filters, stride 1, valid      -> [N, 44, 44, 48]   1,248 params
    ReLU, flatten (H, W, C order, as Keras)    -> [N, 92928]
    dense 128 + ReLU                           -> [N, 128]   11,894,912 params
    dense 32 + ReLU                            -> [N, 32]         4,128 params
    head 1: dense 3 + softmax  "em_trk_none_netout"  [N, 3]          99 params
    head 2: dense 1 + sigmoid  "michel_netout"       [N, 1]          33 params
                                                           total 11,900,420 params

Dropout in the paper is a training-time layer only and has no parameters, so inference omits it.

Weights: the trained ProtoDUNE-SP weights are not public, so the weights here are **untrained,
deterministic stand-ins**, generated from a fixed seed every time the network is built (no weight
files in git). Kernels are He-normal (layers followed by ReLU) or Glorot-normal (the two heads).
The dense layers are then calibrated once, LSUV style, on a fixed batch of synthetic patches: each
unit's kernel column is scaled and its bias chosen so that its pre-activation has mean 0 and a
chosen standard deviation over that batch. Without this step every patch (all-positive ReLU
features) lands in the same class; with it, the class outputs spread across track, shower and
none and the Michel score across (0, 1), so demos show meaningful-looking results. The numbers are
not physics: they only have the right shapes, ranges and cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# ---- tensor names and shapes (the Triton config and clients use exactly these) ------------------
INPUT_NAME: Final = "main_input"
OUTPUT_CLASSES_NAME: Final = "em_trk_none_netout"
OUTPUT_MICHEL_NAME: Final = "michel_netout"
PATCH_SIZE: Final = 48
KERNEL_SIZE: Final = 5
N_FILTERS: Final = 48
CONV_OUT: Final = PATCH_SIZE - KERNEL_SIZE + 1  # 44: "valid" padding, stride 1
FLAT_SIZE: Final = CONV_OUT * CONV_OUT * N_FILTERS  # 92,928
INPUT_SHAPE: Final = (PATCH_SIZE, PATCH_SIZE, 1)
CLASS_NAMES: Final = ("track", "shower", "none")  # order of em_trk_none_netout

# Ordered parameter table: name -> shape. Kernels are (fan_in dims..., fan_out) as in Keras.
PARAM_SHAPES: Final[dict[str, tuple[int, ...]]] = {
    "conv_w": (KERNEL_SIZE, KERNEL_SIZE, 1, N_FILTERS),
    "conv_b": (N_FILTERS,),
    "fc1_w": (FLAT_SIZE, 128),
    "fc1_b": (128,),
    "fc2_w": (128, 32),
    "fc2_b": (32,),
    "em_trk_none_w": (32, 3),
    "em_trk_none_b": (3,),
    "michel_w": (32, 1),
    "michel_b": (1,),
}
EXPECTED_PARAM_COUNT: Final = 11_900_420

DEFAULT_SEED: Final = 20_210_324  # arbitrary but fixed
DEFAULT_CHUNK: Final = 128  # patches per forward chunk: bounds memory (~75 MB of temporaries), cache-friendly
CALIBRATION_PATCHES: Final = 96
# Target pre-activation standard deviations after calibration (see module docstring).
_HIDDEN_STD: Final = 1.0
_CLASS_LOGIT_STD: Final = 2.0
_MICHEL_LOGIT_STD: Final = 2.0


def param_count(shapes: dict[str, tuple[int, ...]] = PARAM_SHAPES) -> int:
    """Total number of scalar parameters described by ``shapes``."""
    return sum(int(np.prod(s)) for s in shapes.values())


# ---- synthetic input -------------------------------------------------------------------------------
def synthetic_patches(n: int, seed: int = 0) -> FloatArray:
    """``n`` deterministic, LArTPC-looking 48x48x1 float32 patches (charge in arbitrary units).

    Each patch is low electronics noise plus one of: nothing, a straight track through the centre,
    an electromagnetic-shower-like cone of scattered deposits, or a short Michel-like stub with a
    small blob. Only meant to make demos and tests look plausible and vary from patch to patch.
    """
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.02, size=(n, PATCH_SIZE, PATCH_SIZE)).astype(np.float32)
    kinds = rng.integers(0, 4, size=n)
    c = (PATCH_SIZE - 1) / 2.0
    t = np.linspace(-1.0, 1.0, 4 * PATCH_SIZE)
    for i in range(n):
        kind = int(kinds[i])
        angle = rng.uniform(0.0, np.pi)
        d = np.array([np.cos(angle), np.sin(angle)])
        if kind == 1:  # track: a full-length line through the hit, ~MIP charge
            pts = c + np.outer(t * PATCH_SIZE * 0.75, d) + rng.normal(0, 0.3, size=(t.size, 2))
            q = rng.uniform(0.6, 1.2, size=t.size)
        elif kind == 2:  # shower: many deposits in a cone, charge falling with depth
            m = 300
            depth = rng.exponential(10.0, size=m)
            spread = rng.normal(0.0, 0.35, size=m) * (depth + 1.0)
            perp = np.array([-d[1], d[0]])
            pts = c + np.outer(depth - 8.0, d) + np.outer(spread, perp)
            q = rng.exponential(0.5, size=m)
        elif kind == 3:  # Michel: short stub ending in a small blob
            stub = np.outer(np.linspace(0.0, 12.0, 40), d)
            blob = rng.normal(0.0, 2.0, size=(40, 2)) + 12.0 * d
            pts = c + np.concatenate([stub, blob])
            q = np.concatenate([rng.uniform(0.8, 1.5, 40), rng.exponential(0.4, 40)])
        else:  # nothing but noise (and perhaps a few stray deposits)
            pts = rng.uniform(0, PATCH_SIZE, size=(3, 2))
            q = rng.exponential(0.2, size=3)
        ij = np.rint(pts).astype(np.int64)
        ok = ((ij >= 0) & (ij < PATCH_SIZE)).all(axis=1)
        np.add.at(out[i], (ij[ok, 0], ij[ok, 1]), q[ok].astype(np.float32))
    return out[..., np.newaxis]


# ---- forward-pass building blocks --------------------------------------------------------------------
def conv2d_channel_major(x: FloatArray, w: FloatArray, b: FloatArray) -> FloatArray:
    """Valid, stride-1 2D cross-correlation (Keras ``Conv2D``) of NHWC ``x`` with 1 input channel.

    The fast path: im2col via ``sliding_window_view`` (one copy, [25, N*44*44]) and one float32
    matmul with the [F, 25] kernel. Returns channel-major feature maps [F, N, 44*44]: this layout
    is what BLAS produces fastest, and the first dense layer consumes it directly (see
    ``EmTrackNet._dense1``), so the NHWC tensor is never materialised on the hot path.
    """
    n, h, wd, _ = x.shape
    kh, kw, _, f = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    # (NumPy 1.26's stubs type ``axis`` as a single index; a tuple is documented and works.)
    windows: FloatArray = np.lib.stride_tricks.sliding_window_view(  # type: ignore[call-overload]
        x[..., 0], (kh, kw), axis=(1, 2)
    )
    cols = windows.transpose(3, 4, 0, 1, 2).reshape(kh * kw, n * oh * ow)
    out: FloatArray = np.ascontiguousarray(w.reshape(kh * kw, f).T) @ cols  # [F, N*OH*OW]
    out += b[:, np.newaxis]
    return out.reshape(f, n, oh * ow)


def conv2d_valid(x: FloatArray, w: FloatArray, b: FloatArray) -> FloatArray:
    """Same convolution as ``conv2d_channel_major`` but returned in Keras NHWC layout [N, 44, 44, F]."""
    n, h, wd, _ = x.shape
    kh, kw, _, f = w.shape
    cm = conv2d_channel_major(x, w, b)
    return np.ascontiguousarray(cm.reshape(f, n, h - kh + 1, wd - kw + 1).transpose(1, 2, 3, 0))


def softmax(z: FloatArray) -> FloatArray:
    """Row-wise numerically stable softmax."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def sigmoid(z: FloatArray) -> FloatArray:
    """Logistic function, stable for large |z|."""
    return (0.5 * (np.tanh(0.5 * z) + 1.0)).astype(np.float32)  # type: ignore[no-any-return]


def _relu_(a: FloatArray) -> FloatArray:
    np.maximum(a, 0.0, out=a)
    return a


class EmTrackNet:
    """The EmTrackMichelId CNN with a fixed set of float32 parameters (see module docstring)."""

    def __init__(self, params: dict[str, FloatArray]) -> None:
        missing = PARAM_SHAPES.keys() - params.keys()
        if missing:
            raise ValueError(f"missing parameters: {sorted(missing)}")
        for name, shape in PARAM_SHAPES.items():
            if params[name].shape != shape:
                raise ValueError(f"{name}: shape {params[name].shape}, expected {shape}")
        # Canonical parameters, Keras layout (fc1_w rows in flatten order h, w, c).
        self.params = {k: np.ascontiguousarray(params[k], dtype=np.float32) for k in PARAM_SHAPES}
        self._prepare()

    def _prepare(self) -> None:
        """Derive the inference-layout copy of fc1_w: [F, 44*44, 128], rows regrouped by channel.

        Row (h*44 + w)*48 + c of the Keras kernel becomes [c, h*44 + w], matching the channel-major
        feature maps of ``conv2d_channel_major``. Costs one 47 MB copy, done once.
        """
        w = self.params["fc1_w"].reshape(CONV_OUT * CONV_OUT, N_FILTERS, -1)
        self._fc1_w_cm = np.ascontiguousarray(w.transpose(1, 0, 2))

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_seed(cls, seed: int = DEFAULT_SEED, calibrate: bool = True) -> EmTrackNet:
        """Deterministic untrained weights: He/Glorot normal kernels, zero biases, then calibration."""
        rng = np.random.default_rng(seed)
        params: dict[str, FloatArray] = {}
        for name, shape in PARAM_SHAPES.items():
            if name.endswith("_b"):
                params[name] = np.zeros(shape, dtype=np.float32)
                continue
            fan_in = int(np.prod(shape[:-1]))
            fan_out = shape[-1] * (int(np.prod(shape[:-2])) if name == "conv_w" else 1)
            if name in ("conv_w", "fc1_w", "fc2_w"):  # followed by ReLU: He normal
                std = np.sqrt(2.0 / fan_in)
            else:  # output heads: Glorot normal
                std = np.sqrt(2.0 / (fan_in + fan_out))
            w = rng.standard_normal(shape, dtype=np.float32)
            w *= np.float32(std)
            params[name] = w
        net = cls(params)
        if calibrate:
            net._calibrate(synthetic_patches(CALIBRATION_PATCHES, seed=seed + 1))
        return net

    def _calibrate(self, x: FloatArray) -> None:
        """LSUV-style: per unit, scale kernel column and set bias so pre-activations are centred."""
        p = self.params

        def fit(name: str, inp: FloatArray, target_std: float) -> FloatArray:
            # Pre-activation statistics over the calibration batch, in float64 for stability.
            z = (inp @ p[f"{name}_w"]).astype(np.float64)
            scale = target_std / np.maximum(z.std(axis=0), 1e-6)
            p[f"{name}_w"] = (p[f"{name}_w"] * scale).astype(np.float32)
            p[f"{name}_b"] = (-z.mean(axis=0) * scale).astype(np.float32)
            return inp @ p[f"{name}_w"] + p[f"{name}_b"]

        h = _relu_(conv2d_valid(x, p["conv_w"], p["conv_b"])).reshape(x.shape[0], FLAT_SIZE)
        h = _relu_(fit("fc1", h, _HIDDEN_STD))
        self._prepare()  # fc1_w changed: refresh its inference-layout copy
        h = _relu_(fit("fc2", h, _HIDDEN_STD))
        fit("em_trk_none", h, _CLASS_LOGIT_STD)
        fit("michel", h, _MICHEL_LOGIT_STD)

    # -- inference ----------------------------------------------------------------------------------
    def param_count(self) -> int:
        return sum(int(v.size) for v in self.params.values())

    def forward(self, x: npt.ArrayLike, chunk_size: int = DEFAULT_CHUNK) -> tuple[FloatArray, FloatArray]:
        """Run the network on [N, 48, 48, 1] patches; returns (em_trk_none [N, 3], michel [N, 1]).

        The batch is processed ``chunk_size`` patches at a time so memory stays bounded whatever N.
        """
        xa = np.asarray(x, dtype=np.float32)
        if xa.ndim == 3:  # accept [N, 48, 48] too
            xa = xa[..., np.newaxis]
        if xa.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected patches of shape [N, 48, 48, 1], got {list(xa.shape)}")
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        n = xa.shape[0]
        classes = np.empty((n, 3), dtype=np.float32)
        michel = np.empty((n, 1), dtype=np.float32)
        for lo, hi in _chunks(n, chunk_size):
            classes[lo:hi], michel[lo:hi] = self._forward_chunk(xa[lo:hi])
        return classes, michel

    __call__ = forward

    def _forward_chunk(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        p = self.params
        h = _relu_(self._dense1(_relu_(conv2d_channel_major(x, p["conv_w"], p["conv_b"]))))
        h = _relu_(h @ p["fc2_w"] + p["fc2_b"])
        classes = softmax(h @ p["em_trk_none_w"] + p["em_trk_none_b"])
        michel = sigmoid(h @ p["michel_w"] + p["michel_b"])
        return classes, michel

    def _dense1(self, conv_cm: FloatArray) -> FloatArray:
        """First dense layer on channel-major maps [F, N, 1936]: sum over channels of [N,1936]@[1936,128].

        Mathematically identical to ``flatten(NHWC) @ fc1_w``, without the transpose copy.
        """
        z: FloatArray = np.matmul(conv_cm, self._fc1_w_cm).sum(axis=0)
        z += self.params["fc1_b"]
        return z


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)
