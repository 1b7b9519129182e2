"""Triton Python-backend model ``identity_fp32``: OUTPUT0[n] = sum(INPUT0[n]) for each patch.

Nearly free, so benchmarks through the gateway measure the proxies and the network. The output is
one float per patch so the response stays small whatever the request size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _require_numpy_1() -> None:
    """Refuse to run under NumPy 2 instead of silently answering garbage.

    The Python-backend stub shipped with Triton 2.51 (nvidia-pytriton, which pins numpy<2) misreads
    NumPy 2 arrays: inputs arrive with wrong values and outputs come back empty. The stub ignores
    PYTHONPATH and takes its site-packages from the first ``python3`` on PATH, so start tritonserver
    with the environment that has numpy<2 (e.g. the project's .venv/bin) first on PATH.
    """
    if int(np.__version__.split(".")[0]) >= 2:
        raise RuntimeError(
            f"NumPy {np.__version__} loaded from {os.path.dirname(np.__file__)}: Triton's Python-backend "
            "stub needs numpy<2; put the environment's bin/ (with numpy<2) first on PATH for tritonserver"
        )


class TritonPythonModel:
    """Per-patch sum; each request is answered on its own (no concatenation needed)."""

    def initialize(self, args: dict[str, str]) -> None:
        _require_numpy_1()

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            sums = x.reshape(x.shape[0], -1).sum(axis=1, dtype=np.float32, keepdims=True)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", sums)]))
        return responses
