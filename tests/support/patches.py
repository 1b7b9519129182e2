"""Synthetic EmTrackMichelId inputs for tests: sparse, hit-like 48x48 patches."""

from __future__ import annotations

import numpy as np


def sparse_patches(n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 patches [n, 48, 48, 1]: a few charged pixels around the centre, the rest empty."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 48, 48, 1), np.float32)
    idx = rng.integers(18, 30, size=(n, 40, 2))
    for i in range(n):
        x[i, idx[i, :, 0], idx[i, :, 1], 0] = rng.exponential(50.0, size=40)
    return x
