"""Triton Python-backend model ``delay_fp32``: identity_fp32 plus a configurable service time.

Each ``execute`` call (one batch; with dynamic batching it may hold several requests) sleeps
``delay_ms + delay_us_per_item * patches / 1000`` milliseconds, then answers every request with
OUTPUT0[n] = sum(INPUT0[n]). Both delays come from the ``parameters`` of config.pbtxt.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _float_param(config: dict[str, Any], key: str, default: float) -> float:
    """A non-negative number from the model config's ``parameters`` map."""
    raw = config.get("parameters", {}).get(key, {}).get("string_value", "")
    value = float(raw) if raw != "" else default
    if value < 0:
        raise ValueError(f"delay_fp32: parameter {key} must be >= 0, got {raw!r}")
    return value


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
    """Sleeps to emulate an accelerator's service time, then returns per-patch sums."""

    def initialize(self, args: dict[str, str]) -> None:
        _require_numpy_1()
        config = json.loads(args["model_config"])
        self.delay_s = _float_param(config, "delay_ms", 5.0) / 1e3
        self.delay_s_per_item = _float_param(config, "delay_us_per_item", 50.0) / 1e6
        pb_utils.Logger.log_info(
            f"delay_fp32: {self.delay_s * 1e3:g} ms per execution + "
            f"{self.delay_s_per_item * 1e6:g} us per patch"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        start = time.perf_counter()
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        items = sum(x.shape[0] for x in inputs)
        responses = []
        for x in inputs:
            sums = x.reshape(x.shape[0], -1).sum(axis=1, dtype=np.float32, keepdims=True)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", sums)]))
        # Sleep for whatever is left of the emulated service time after the real work.
        remaining = self.delay_s + self.delay_s_per_item * items - (time.perf_counter() - start)
        if remaining > 0:
            time.sleep(remaining)
        return responses
