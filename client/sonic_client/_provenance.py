"""Provenance headers that travel with every request.

Contract with the gateway (which records them in the catalog): gRPC metadata / HTTP headers
``sonic-job-id`` and ``sonic-dataset``, plus ``x-request-id`` (uuid4 hex, one per call and shared
by the batches of one :meth:`Client.infer`, whose batch index is appended as ``-<n>``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["JOB_ID_ENV_FALLBACKS", "Provenance"]

JOB_ID_HEADER = "sonic-job-id"
DATASET_HEADER = "sonic-dataset"
REQUEST_ID_HEADER = "x-request-id"

#: When neither an explicit job id nor ``SONIC_JOB_ID`` is set, the first of these batch-system
#: variables that is set is used, prefixed with the system's name so ids from different schedulers
#: cannot collide in the catalog (``slurm:123456``).
JOB_ID_ENV_FALLBACKS: tuple[tuple[str, str], ...] = (
    ("CONDOR_JOBID", "condor"),  # set by HTCondor/glideinWMS grid wrappers (cluster.proc)
    ("SLURM_JOB_ID", "slurm"),
    ("PBS_JOBID", "pbs"),
    ("LSB_JOBID", "lsf"),
)


def _header_value(value: str) -> str:
    """gRPC metadata must be printable ASCII: keep it, percent-encode anything else."""
    value = value.strip()
    if all(32 <= ord(c) < 127 for c in value):
        return value
    return quote(value, safe=" !#$&'()*+,/:;=?@[]~-._")


@dataclass(frozen=True)
class Provenance:
    """Job id and dataset name attached to every request (None: not sent)."""

    job_id: str | None = None
    dataset: str | None = None

    @classmethod
    def resolve(cls, job_id: str | None = None, dataset: str | None = None,
                environ: Mapping[str, str] | None = None) -> Provenance:
        """Explicit values first, then ``SONIC_JOB_ID`` / ``SONIC_DATASET``, then batch-system ids."""
        env = os.environ if environ is None else environ
        if not job_id:
            job_id = env.get("SONIC_JOB_ID") or None
        if not job_id:
            for var, system in JOB_ID_ENV_FALLBACKS:
                if env.get(var):
                    job_id = f"{system}:{env[var]}"
                    break
        if not dataset:
            dataset = env.get("SONIC_DATASET") or None
        return cls(job_id=job_id, dataset=dataset)

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.job_id:
            out[JOB_ID_HEADER] = _header_value(self.job_id)
        if self.dataset:
            out[DATASET_HEADER] = _header_value(self.dataset)
        return out


def new_request_id() -> str:
    return uuid.uuid4().hex
