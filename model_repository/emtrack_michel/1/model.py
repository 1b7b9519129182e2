"""Triton Python-backend model: the EmTrackMichelId CNN (network in ``emtrack_net.py``, NumPy only).

Inputs/outputs (see config.pbtxt):
    main_input          FP32 [N, 48, 48, 1]
    em_trk_none_netout  FP32 [N, 3]   softmax over (track, shower, none)
    michel_netout       FP32 [N, 1]   sigmoid Michel score

With dynamic batching, Triton hands ``execute`` several requests at once: their patches are
concatenated, run as one batch, and the outputs split back per request.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

# Triton 2.51's Python-backend stub already puts this version directory on sys.path (checked);
# insert it anyway so the import does not depend on that detail of the stub.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by the stub at run time)
from emtrack_net import (  # noqa: E402
    DEFAULT_CHUNK,
    DEFAULT_SEED,
    INPUT_NAME,
    OUTPUT_CLASSES_NAME,
    OUTPUT_MICHEL_NAME,
    EmTrackNet,
)


def _param(config: dict[str, Any], key: str, default: str) -> str:
    """A string parameter from the model config's ``parameters`` map."""
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return str(value) if value != "" else default


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
    """EmTrackMichelId served by Triton's Python backend."""

    def initialize(self, args: dict[str, str]) -> None:
        _require_numpy_1()
        config = json.loads(args["model_config"])
        seed = int(_param(config, "weight_seed", str(DEFAULT_SEED)))
        self.chunk_size = int(_param(config, "chunk_size", str(DEFAULT_CHUNK)))
        self.net = EmTrackNet.from_seed(seed)
        pb_utils.Logger.log_info(
            f"emtrack_michel: {self.net.param_count():,} parameters, weight_seed={seed}, "
            f"chunk_size={self.chunk_size}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
        try:
            x = batches[0] if len(batches) == 1 else np.concatenate(batches, axis=0)
            classes, michel = self.net.forward(x, chunk_size=self.chunk_size)
        except Exception as exc:  # report to every client instead of crashing the stub
            error = pb_utils.TritonError(f"emtrack_michel inference failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

        responses = []
        lo = 0
        for batch in batches:
            hi = lo + batch.shape[0]
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(OUTPUT_CLASSES_NAME, classes[lo:hi]),
                        pb_utils.Tensor(OUTPUT_MICHEL_NAME, michel[lo:hi]),
                    ]
                )
            )
            lo = hi
        return responses

    def finalize(self) -> None:
        self.net = None  # type: ignore[assignment]
