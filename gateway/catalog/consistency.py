"""Does a backend serve a model version as the catalog describes it? A pure comparison, reasons in words.

The catalog records a signature in KServe v2 terms: ``datatype`` as ``FP32`` (Triton's ``TYPE_FP32`` is
accepted too) and ``shape`` either per item, like ``dims`` in a ``config.pbtxt``, or with the batch
dimension first as ``-1``, like Triton's ModelMetadata reports it. What the catalog leaves empty is not
checked: an empty ``platform``, an empty list of inputs or outputs, and ``max_batch_size`` 0 on a
version without a recorded signature (0 is also the field's default, i.e. "not recorded").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

UNCHECKED = "unchecked"  # no verdict yet (a new deployment)
CONSISTENT = "consistent"
MISMATCH = "mismatch"
NOT_READY = "not_ready"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str  # KServe v2 name: FP32, INT64, BYTES, ...
    dims: tuple[int, ...]  # per item (without the batch dimension)


@dataclass(frozen=True)
class ServedModel:
    """A model version as a backend reports it (Triton's ModelConfig)."""

    name: str
    version: str
    platform: str
    backend: str
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class Expected:
    """A catalog ModelVersion, as far as the comparison needs it."""

    model_version_id: int
    model: str
    version: str
    platform: str = ""
    inputs: tuple[dict[str, Any], ...] = ()
    outputs: tuple[dict[str, Any], ...] = ()
    max_batch_size: int = 0


# The KServe v2 tensor datatypes (what datatype() turns Triton's names into).
DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16", "BYTES"}
)


def datatype(name: str) -> str:
    """``TYPE_FP32`` -> ``FP32``; Triton's ``STRING`` is KServe's ``BYTES``."""
    upper = name.upper().removeprefix("TYPE_")
    return "BYTES" if upper == "STRING" else upper


def _shape(dims: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _compare_tensors(
    kind: str, wanted: Sequence[dict[str, Any]], served: Sequence[Tensor], batched: bool
) -> list[str]:
    problems: list[str] = []
    have = {t.name: t for t in served}
    names = [str(w.get("name", "")) for w in wanted]
    for spec in wanted:
        name = str(spec.get("name", ""))
        tensor = have.get(name)
        if tensor is None:
            problems.append(
                f"the backend has no {kind} {name!r} (its {kind}s: {', '.join(sorted(have)) or 'none'})"
            )
            continue
        want_type = datatype(str(spec.get("datatype", "")))
        want_shape = [int(d) for d in spec.get("shape", [])]
        shape_ok = want_shape == list(tensor.dims) or (batched and want_shape == [-1, *tensor.dims])
        if want_type != tensor.datatype or not shape_ok:
            served_shape = [-1, *tensor.dims] if batched else list(tensor.dims)
            problems.append(
                f"{kind} {name!r}: the catalog says {want_type} {_shape(want_shape)}, "
                f"the backend serves {tensor.datatype} {_shape(served_shape)}"
            )
    extra = sorted(set(have) - set(names))
    if extra:
        problems.append(f"the backend has {kind}(s) the catalog does not list: {', '.join(extra)}")
    return problems


def compare(expected: Expected, served: ServedModel) -> list[str]:
    """What differs between the catalog entry and what the backend serves; empty when they agree."""
    problems: list[str] = []
    if expected.platform and expected.platform not in (served.platform, served.backend):
        problems.append(
            f"platform: the catalog says {expected.platform!r}, the backend runs "
            f"{served.platform or served.backend!r}"
        )
    signature = bool(expected.inputs or expected.outputs)
    if (signature or expected.max_batch_size > 0) and expected.max_batch_size != served.max_batch_size:
        problems.append(
            f"max_batch_size: the catalog says {expected.max_batch_size}, "
            f"the backend serves {served.max_batch_size}"
        )
    batched = served.max_batch_size > 0
    if expected.inputs:
        problems += _compare_tensors("input", expected.inputs, served.inputs, batched)
    if expected.outputs:
        problems += _compare_tensors("output", expected.outputs, served.outputs, batched)
    return problems


def mismatch_reason(expected: Expected, problems: Sequence[str]) -> str:
    """One sentence for the API: what differs, and the two ways to fix it."""
    return (
        f"{expected.model} version {expected.version} differs from the catalog: {'; '.join(problems)}. "
        f"Deploy the model the catalog describes on this backend, or correct the catalog entry "
        f"(PATCH /api/v1/model-versions/{expected.model_version_id}); "
        "this backend gets no traffic for the model until they agree"
    )


def not_ready_reason(expected: Expected, reported: Sequence[str]) -> str:
    have = ", ".join(sorted(reported)) if reported else "no version of it"
    return (
        f"{expected.model} version {expected.version} is registered on this backend but the backend does "
        f"not report it ready (it reports {have}). Load that version on the backend, or register the "
        "version it serves; this backend gets no traffic for the model until then"
    )
