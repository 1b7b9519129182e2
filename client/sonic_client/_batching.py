"""Splitting large inputs into batches and putting the outputs back together in order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["reassemble", "split_batches"]

Array = npt.NDArray[np.generic]


def batch_length(inputs: Mapping[str, Array]) -> int:
    """The common first dimension of all inputs (the batch dimension)."""
    if not inputs:
        raise ValueError("no inputs given")
    lengths = {name: (a.shape[0] if a.ndim else -1) for name, a in inputs.items()}
    if any(n < 0 for n in lengths.values()):
        raise ValueError(f"inputs must have a batch dimension: {lengths}")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"inputs disagree on the batch dimension: {lengths}")
    return next(iter(lengths.values()))


def split_batches(inputs: Mapping[str, Array], batch_size: int | None) -> list[dict[str, Array]]:
    """Cut every input along axis 0 into consecutive slices of ``batch_size`` (the last may be short).

    ``batch_size=None`` (or one at least as large as the input) gives a single batch. Slices are
    views: no copy is made here.
    """
    n = batch_length(inputs)
    if batch_size is not None and batch_size < 1:
        raise ValueError("batch_size must be a positive integer")
    if batch_size is None or batch_size >= n:
        return [dict(inputs)]
    return [{name: a[start:start + batch_size] for name, a in inputs.items()}
            for start in range(0, n, batch_size)]


def reassemble(parts: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
    """Concatenate per-batch outputs (given in batch order) along axis 0."""
    if not parts:
        return {}
    if len(parts) == 1:
        return dict(parts[0])
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
