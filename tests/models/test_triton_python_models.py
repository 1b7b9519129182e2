"""The Triton models of model_repository/ without a server: config contracts and model.py logic.

Each model.py is loaded by path with a minimal stand-in for ``triton_python_backend_utils`` (the
module the Python-backend stub provides), then driven through initialize/execute the way the stub
does, including several requests in one execute call (dynamic batching).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

Array = npt.NDArray[np.float32]

REPO = Path(__file__).resolve().parents[2] / "model_repository"
_NUMPY_2 = int(np.__version__.split(".")[0]) >= 2


# ---- a stand-in for triton_python_backend_utils --------------------------------------------------------
class _Tensor:
    def __init__(self, name: str, array: Array) -> None:
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> Array:
        return self._array


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: Any = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


_FINAL = 1  # TRITONSERVER_RESPONSE_COMPLETE_FINAL


class _Sender:
    """A decoupled request's response sender: what was sent, with its flags."""

    def __init__(self) -> None:
        self.sent: list[tuple[_Response | None, int]] = []

    def send(self, response: _Response | None = None, flags: int = 0) -> None:
        assert not (self.sent and self.sent[-1][1] & _FINAL), "sent after the final flag"
        self.sent.append((response, flags))


class _Request:
    def __init__(self, **inputs: Array) -> None:
        self.inputs = {k: _Tensor(k, v) for k, v in inputs.items()}
        self.sender = _Sender()

    def get_response_sender(self) -> _Sender:
        return self.sender


def _fake_pb_utils() -> ModuleType:
    mod = ModuleType("triton_python_backend_utils")
    mod.Tensor = _Tensor  # type: ignore[attr-defined]
    mod.InferenceResponse = _Response  # type: ignore[attr-defined]
    mod.TritonError = lambda msg: SimpleNamespace(message=lambda: msg)  # type: ignore[attr-defined]
    mod.Logger = SimpleNamespace(log_info=lambda msg: None)  # type: ignore[attr-defined]
    mod.get_input_tensor_by_name = lambda req, name: req.inputs.get(name)  # type: ignore[attr-defined]
    mod.TRITONSERVER_RESPONSE_COMPLETE_FINAL = _FINAL  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def load_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Load ``model_repository/<name>/1/model.py`` and initialize it with its own config."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    added: list[str] = []

    def load(name: str, **params: str) -> Any:
        path = REPO / name / "1" / "model.py"
        spec = importlib.util.spec_from_file_location(f"triton_model_{name}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        before = set(sys.path)
        spec.loader.exec_module(module)
        added.extend(p for p in sys.path if p not in before)
        if _NUMPY_2:  # the guard is for the real stub only
            module._require_numpy_1 = lambda: None  # type: ignore[attr-defined]
        model = module.TritonPythonModel()
        config = _config_as_json(name)
        for key, value in params.items():
            config.setdefault("parameters", {})[key] = {"string_value": value}
        model.initialize({"model_config": json.dumps(config)})
        return model

    yield load
    for p in added:  # model.py may put its own directory on sys.path
        if p in sys.path:
            sys.path.remove(p)


# ---- config.pbtxt contracts -------------------------------------------------------------------------------
def _read_config(name: str) -> str:
    return (REPO / name / "config.pbtxt").read_text()


def _config_as_json(name: str) -> dict[str, Any]:
    """The bits of config.pbtxt that model.py reads (``parameters``), as Triton passes them."""
    text = _read_config(name)
    params = dict(re.findall(r'key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"', text))
    return {"name": name, "parameters": {k: {"string_value": v} for k, v in params.items()}}


def _tensors(text: str, section: str) -> list[tuple[str, str, list[int]]]:
    block = re.search(section + r"\s*\[(.*?)\n\]", text, re.S)
    assert block is not None, section
    found = re.findall(
        r'name:\s*"([^"]+)"\s*data_type:\s*(\w+)\s*dims:\s*\[([^\]]*)\]', re.sub(r"#.*", "", block.group(1))
    )
    return [(n, t, [int(d) for d in dims.split(",")]) for n, t, dims in found]


@pytest.mark.parametrize(
    ("name", "inputs", "outputs"),
    [
        (
            "emtrack_michel",
            [("main_input", "TYPE_FP32", [48, 48, 1])],
            [("em_trk_none_netout", "TYPE_FP32", [3]), ("michel_netout", "TYPE_FP32", [1])],
        ),
        ("identity_fp32", [("INPUT0", "TYPE_FP32", [48, 48, 1])], [("OUTPUT0", "TYPE_FP32", [1])]),
        ("delay_fp32", [("INPUT0", "TYPE_FP32", [48, 48, 1])], [("OUTPUT0", "TYPE_FP32", [1])]),
    ],
)
def test_config_declares_the_published_tensors(name: str, inputs: list[Any], outputs: list[Any]) -> None:
    text = _read_config(name)
    assert re.search(rf'^name:\s*"{name}"', text, re.M)
    assert re.search(r'^backend:\s*"python"', text, re.M)
    assert re.search(r"^max_batch_size:\s*4096\b", text, re.M)
    assert re.search(r"^dynamic_batching\s*\{", text, re.M)
    assert "kind: KIND_CPU" in text
    assert _tensors(text, "input") == inputs
    assert _tensors(text, "output") == outputs


def test_no_weight_files_in_the_repository() -> None:
    suffixes = {".npy", ".npz", ".pt", ".onnx", ".savedmodel", ".pb", ".h5", ".plan"}
    assert not [p for p in REPO.rglob("*") if p.suffix in suffixes]


# ---- model.py behaviour -----------------------------------------------------------------------------------
def _patches(n: int, seed: int) -> Array:
    return np.random.default_rng(seed).random((n, 48, 48, 1), dtype=np.float32)


def test_emtrack_model_splits_a_dynamic_batch_back_per_request(load_model: Any) -> None:
    model = load_model("emtrack_michel", chunk_size="4")
    xs = [_patches(n, seed) for seed, n in enumerate((3, 1, 6))]
    responses = model.execute([_Request(main_input=x) for x in xs])
    assert len(responses) == 3
    for x, resp in zip(xs, responses, strict=True):
        assert resp.error is None
        classes, michel = resp.outputs["em_trk_none_netout"], resp.outputs["michel_netout"]
        ref_classes, ref_michel = model.net.forward(x)
        assert classes.shape == (len(x), 3)
        assert michel.shape == (len(x), 1)
        np.testing.assert_allclose(classes, ref_classes, atol=1e-5)
        np.testing.assert_allclose(michel, ref_michel, atol=1e-5)


def test_emtrack_model_reports_errors_per_request(load_model: Any) -> None:
    model = load_model("emtrack_michel")
    responses = model.execute([_Request(main_input=np.zeros((2, 10, 10, 1), dtype=np.float32))])
    assert responses[0].error is not None
    assert "48, 48, 1" in responses[0].error.message()


def test_identity_model_returns_per_patch_sums(load_model: Any) -> None:
    model = load_model("identity_fp32")
    xs = [_patches(n, 10 + n) for n in (1, 5)]
    responses = model.execute([_Request(INPUT0=x) for x in xs])
    for x, resp in zip(xs, responses, strict=True):
        out = resp.outputs["OUTPUT0"]
        assert out.shape == (len(x), 1)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out[:, 0], x.reshape(len(x), -1).sum(axis=1), rtol=1e-5)


def test_delay_model_sleeps_per_execution_plus_per_item(load_model: Any) -> None:
    model = load_model("delay_fp32", delay_ms="20", delay_us_per_item="1000")
    xs = [_patches(10, 1), _patches(20, 2)]  # 30 patches: 20 ms + 30 ms
    start = time.perf_counter()
    responses = model.execute([_Request(INPUT0=x) for x in xs])
    elapsed = time.perf_counter() - start
    assert elapsed >= 0.050
    assert [r.outputs["OUTPUT0"].shape for r in responses] == [(10, 1), (20, 1)]


def test_delay_model_defaults_come_from_its_config(load_model: Any) -> None:
    model = load_model("delay_fp32")
    assert model.delay_s == pytest.approx(0.005)
    assert model.delay_s_per_item == pytest.approx(50e-6)


def test_delay_model_rejects_negative_delays(load_model: Any) -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        load_model("delay_fp32", delay_ms="-1")


def test_repeat_model_is_decoupled_with_its_tensors() -> None:
    text = _read_config("repeat_fp32")
    assert re.search(r"model_transaction_policy\s*\{\s*decoupled:\s*true\s*\}", text)
    assert re.search(r"^max_batch_size:\s*0\b", text, re.M)
    assert _tensors(text, "input") == [
        ("INPUT0", "TYPE_FP32", [-1]),
        ("REPEAT", "TYPE_INT32", [1]),
        ("DELAY_MS", "TYPE_INT32", [1]),
    ]
    assert _tensors(text, "output") == [("OUTPUT0", "TYPE_FP32", [-1]), ("INDEX", "TYPE_INT32", [1])]


def _repeat_request(n: int, values: list[float], delay_ms: int | None = None) -> _Request:
    inputs: dict[str, Any] = {
        "INPUT0": np.array(values, np.float32),
        "REPEAT": np.array([n], np.int32),
    }
    if delay_ms is not None:
        inputs["DELAY_MS"] = np.array([delay_ms], np.int32)
    return _Request(**inputs)


def test_repeat_model_sends_n_responses_then_the_final_flag(load_model: Any) -> None:
    model = load_model("repeat_fp32")
    requests = [_repeat_request(3, [1.0, 2.0]), _repeat_request(0, [5.0]), _repeat_request(1, [0.5], 0)]
    assert model.execute(requests) is None  # decoupled: answers go through the senders
    first = requests[0].sender.sent
    assert [flags for _, flags in first] == [0, 0, 0, _FINAL]
    assert first[-1][0] is None
    for index, (response, _) in enumerate(first[:3]):
        assert response is not None
        assert response.outputs["INDEX"].tolist() == [index]
        np.testing.assert_array_equal(response.outputs["OUTPUT0"], np.array([1.0, 2.0], np.float32) + index)
    assert requests[1].sender.sent == [(None, _FINAL)]  # zero responses: only the final flag
    assert len(requests[2].sender.sent) == 2


def test_repeat_model_answers_an_out_of_range_count_with_one_error(load_model: Any) -> None:
    model = load_model("repeat_fp32", max_repeat="5")
    request = _repeat_request(6, [1.0])
    model.execute([request])
    ((response, flags),) = request.sender.sent
    assert flags == _FINAL
    assert response is not None
    assert "between 0 and 5" in response.error.message()


def test_repeat_model_sleeps_before_each_response(load_model: Any) -> None:
    model = load_model("repeat_fp32")
    start = time.perf_counter()
    model.execute([_repeat_request(3, [1.0], delay_ms=20)])
    assert time.perf_counter() - start >= 0.060


@pytest.mark.parametrize("name", ["emtrack_michel", "identity_fp32", "delay_fp32", "repeat_fp32"])
def test_models_refuse_numpy_2_which_the_stub_misreads(
    name: str, load_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(np, "__version__", "2.0.0")
    with pytest.raises(RuntimeError, match="numpy<2"):
        load_model(name)
