"""Triton Python-backend model ``repeat_fp32``: decoupled, one request answered by several responses.

For INPUT0 (floats) and REPEAT = [n] it sends n responses through the request's response sender,
the i-th with OUTPUT0 = INPUT0 + i and INDEX = [i], sleeping DELAY_MS (optional, default 0) before
each, then the final flag. Errors (n < 0, n > max_repeat) are one error response with the final flag.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _require_numpy_1() -> None:
    """Refuse to run under NumPy 2 instead of silently answering garbage (see delay_fp32/1/model.py)."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise RuntimeError(
            f"NumPy {np.__version__} loaded from {os.path.dirname(np.__file__)}: Triton's Python-backend "
            "stub needs numpy<2; put the environment's bin/ (with numpy<2) first on PATH for tritonserver"
        )


def _scalar(request: Any, name: str, default: int) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return int(tensor.as_numpy().reshape(-1)[0])


class TritonPythonModel:
    """Sends REPEAT responses per request (decoupled transaction policy)."""

    def initialize(self, args: dict[str, str]) -> None:
        _require_numpy_1()
        config = json.loads(args["model_config"])
        raw = config.get("parameters", {}).get("max_repeat", {}).get("string_value", "1000")
        self.max_repeat = int(raw)
        if self.max_repeat < 0:
            raise ValueError(f"repeat_fp32: parameter max_repeat must be >= 0, got {raw!r}")

    def execute(self, requests: list[Any]) -> None:
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy().astype(np.float32)
            repeat = _scalar(request, "REPEAT", 1)
            delay_s = max(_scalar(request, "DELAY_MS", 0), 0) / 1e3
            if not 0 <= repeat <= self.max_repeat:
                error = pb_utils.TritonError(f"REPEAT must be between 0 and {self.max_repeat}, got {repeat}")
                sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=final)
                continue
            for index in range(repeat):
                if delay_s:
                    time.sleep(delay_s)
                outputs = [
                    pb_utils.Tensor("OUTPUT0", values + np.float32(index)),
                    pb_utils.Tensor("INDEX", np.array([index], np.int32)),
                ]
                sender.send(pb_utils.InferenceResponse(output_tensors=outputs))
            sender.send(flags=final)
        return None
