"""Request and response bodies of the admin/catalog API (pydantic; 422 with field messages on bad input)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gateway.config import parse_address

T = TypeVar("T")

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
# A data identifier, e.g. ``protodune-sp:np04_reco_run5387`` (scope:name) or just a name.
DatasetName = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$")]
Version = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Count = Annotated[int, Field(ge=0)]


def _address(value: str) -> str:
    parse_address(value)
    return value


Address = Annotated[str, Field(max_length=256), AfterValidator(_address)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# -- facilities ---------------------------------------------------------------------------------------
class FacilityIn(_In):
    name: Name
    site: str = Field(default="", max_length=256)
    description: str = ""
    contact: str = Field(default="", max_length=256)
    enabled: bool = True


class FacilityPatch(_In):
    site: str | None = Field(default=None, max_length=256)
    description: str | None = None
    contact: str | None = Field(default=None, max_length=256)
    enabled: bool | None = None


class FacilityOut(BaseModel):
    id: int
    name: str
    site: str
    description: str
    contact: str
    enabled: bool
    created_at: dt.datetime


# -- backends -----------------------------------------------------------------------------------------
class BackendIn(_In):
    facility: Name
    protocol: Literal["grpc", "http"] = "grpc"
    address: Address
    http_address: Address | None = None
    metrics_address: Address | None = None
    capacity: float = Field(default=1.0, gt=0, le=1e6)
    accelerator: str = Field(default="", max_length=256)
    enabled: bool = True
    draining: bool = False


class BackendPatch(_In):
    http_address: Address | None = None
    metrics_address: Address | None = None
    capacity: float | None = Field(default=None, gt=0, le=1e6)
    accelerator: str | None = Field(default=None, max_length=256)
    enabled: bool | None = None
    draining: bool | None = None


class BackendOut(BaseModel):
    id: int
    facility: str
    facility_id: int
    router_id: str
    protocol: str
    address: str
    http_address: str | None
    metrics_address: str | None
    capacity: float
    accelerator: str
    enabled: bool
    draining: bool
    last_health_at: dt.datetime | None = Field(
        description="when the consistency check last got an answer from this backend"
    )
    observed_models: dict[str, list[str]] = Field(
        description="model -> versions the backend reported ready at that time"
    )
    created_at: dt.datetime


# -- datasets -----------------------------------------------------------------------------------------
class DatasetIn(_In):
    name: DatasetName
    experiment: str = Field(default="", max_length=128)
    data_tier: str = Field(default="", max_length=128)
    format: str = Field(default="", max_length=64)
    n_files: Count | None = None
    n_events: Count | None = None
    size_bytes: Count | None = None
    checksum: str | None = Field(default=None, max_length=256)
    storage_uris: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DatasetPatch(_In):
    experiment: str | None = Field(default=None, max_length=128)
    data_tier: str | None = Field(default=None, max_length=128)
    format: str | None = Field(default=None, max_length=64)
    n_files: Count | None = None
    n_events: Count | None = None
    size_bytes: Count | None = None
    checksum: str | None = Field(default=None, max_length=256)
    storage_uris: list[str] | None = None
    metadata: dict[str, Any] | None = None


class DatasetOut(BaseModel):
    id: int
    name: str
    experiment: str
    data_tier: str
    format: str
    n_files: int | None
    n_events: int | None
    size_bytes: int | None
    checksum: str | None
    storage_uris: list[str]
    metadata: dict[str, Any]
    created_at: dt.datetime


# -- models -------------------------------------------------------------------------------------------
class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    datatype: str = Field(min_length=1)
    shape: list[int]


class ModelVersionIn(_In):
    version: Version
    platform: str = Field(default="", max_length=64)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    max_batch_size: Count = 0
    sha256: Sha256 | None = None
    allowed_groups: list[str] = Field(default_factory=list)
    training_dataset: DatasetName | None = None
    tags: list[str] = Field(default_factory=list)


class ModelVersionPatch(_In):
    platform: str | None = Field(default=None, max_length=64)
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    max_batch_size: Count | None = None
    sha256: Sha256 | None = None
    allowed_groups: list[str] | None = None
    training_dataset: DatasetName | None = None
    tags: list[str] | None = None


class ModelVersionOut(BaseModel):
    id: int
    model: str
    model_id: int
    version: str
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    max_batch_size: int
    sha256: str | None
    allowed_groups: list[str]
    training_dataset: str | None
    created_by: str
    tags: list[str]
    created_at: dt.datetime


class ModelIn(_In):
    name: ModelName
    description: str = ""
    versions: list[ModelVersionIn] = Field(default_factory=list)


class ModelPatch(_In):
    description: str | None = None


class ModelOut(BaseModel):
    id: int
    name: str
    description: str
    versions: list[str]
    created_at: dt.datetime


# -- deployments --------------------------------------------------------------------------------------
class DeploymentIn(_In):
    backend_id: int
    model: ModelName
    version: Version
    state: Literal["registered", "observed"] = "registered"


class DeploymentPatch(_In):
    state: Literal["registered", "observed"]


class DeploymentOut(BaseModel):
    id: int
    backend_id: int
    backend: str
    facility: str
    model_version_id: int
    model: str
    version: str
    state: str = Field(description="'registered' by an admin, or 'observed' on the backend by the gateway")
    consistency: str = Field(
        description="the consistency check's verdict: unchecked, consistent (routed), mismatch or "
        "not_ready (the backend gets no traffic for this model), unreachable (last verdict kept)"
    )
    consistency_reason: str = Field(description="why, and what to do, when not consistent")
    checked_at: dt.datetime | None = Field(description="when the verdict was reached")
    created_at: dt.datetime


# -- usage --------------------------------------------------------------------------------------------
class UsageOut(BaseModel):
    id: int
    job_id: str | None
    dataset: str | None
    model: str
    version: str
    facility: str
    backend: str
    subject: str
    issuer: str
    n_requests: int
    n_inferences: int
    first_seen: dt.datetime
    last_seen: dt.datetime
