"""Request and response bodies of the admin/catalog API (pydantic; 422 with field messages on bad input).

Input is checked here, before the database sees it, so that bad input is a 422 naming the field and
never a 500 from the database: numbers stay inside their column's range, text holds no NUL (PostgreSQL
refuses it), floats are finite (JSON has no NaN), numbers are numbers (``true`` is not a capacity), and
a PATCH cannot null a field that needs a value (see ``_Patch``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import typing
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.catalog.consistency import DATATYPES, datatype

T = TypeVar("T")

# Column ranges (PostgreSQL's INTEGER and BIGINT; SQLite stores 64-bit integers).
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
ModelName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
# A data identifier, e.g. ``protodune-sp:np04_reco_run5387`` (scope:name) or just a name.
DatasetName = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$")]
Version = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z._-]+$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Count = Annotated[int, Field(ge=0, le=INT64_MAX, strict=True)]  # BIGINT columns
SmallCount = Annotated[int, Field(ge=0, le=INT32_MAX, strict=True)]  # INTEGER columns
Ident = Annotated[int, Field(ge=1, le=INT32_MAX, strict=True)]
Capacity = Annotated[float, Field(gt=0, le=1e6, strict=True)]


def _known_datatype(value: str) -> str:
    if datatype(value) not in DATATYPES:
        raise ValueError(
            f"unknown datatype {value!r}; one of {', '.join(sorted(DATATYPES))} (or TYPE_FP32...)"
        )
    return value


# KServe v2 names (FP32), or Triton's (TYPE_FP32): kept as written, compared as KServe's.
Datatype = Annotated[str, Field(max_length=32), AfterValidator(_known_datatype)]
Dim = Annotated[int, Field(ge=-1, le=INT64_MAX, strict=True)]  # -1: variable

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


def check_address(value: str) -> str:
    """``host:port`` as gRPC and HTTP clients dial it: a DNS name, IPv4 or ``[IPv6]``, and a port in
    1..65535. No scheme, no path, no spaces."""
    if "://" in value:
        raise ValueError(f"{value!r} has a scheme; give host:port only (e.g. {value.split('://', 1)[1]!r})")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise ValueError(f"{value!r} is not an address of the form host:port")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: the port must be 1..65535")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{value!r}: {host} is not an IPv6 address") from None
    elif len(host) > 253 or not _HOSTNAME.match(host) or _bad_ipv4(host):
        raise ValueError(f"{value!r}: {host!r} is not a host name or IP address ([IPv6] in brackets)")
    return value


def _bad_ipv4(host: str) -> bool:
    """All-numeric names are IPv4 addresses, and must be valid ones (``999.1.1.1`` is not)."""
    if not host.replace(".", "").isdigit():
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


Address = Annotated[str, Field(max_length=256), AfterValidator(check_address)]


def _unstorable(value: Any, path: str) -> str | None:
    """Why the database could not store ``value`` (and where), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path}: text may not contain NUL characters"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path}: text is not valid Unicode (a lone surrogate)"
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{path}: {value} is not a finite number"
    elif isinstance(value, dict):
        for key, item in value.items():
            if why := _unstorable(key, f"{path} key") or _unstorable(item, f"{path}.{key}"):
                return why
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if why := _unstorable(item, f"{path}.{i}"):
                return why
    return None


class _Storable(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if why := _unstorable(value, str(key)):
                    raise ValueError(why)
        return data


class _In(_Storable):
    model_config = ConfigDict(extra="forbid")


def _accepts_none(annotation: Any) -> bool:
    """``X | None`` (or ``None``): the field may be set to null."""
    return annotation is None or type(None) in typing.get_args(annotation)


def _hide_null_defaults(schema: dict[str, Any]) -> None:
    """A PATCH field is optional, not nullable: its schema shows no ``null`` default."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None and "anyOf" not in prop:
            del prop["default"]


def unset(**constraints: Any) -> Any:
    """The default of a PATCH field that needs a value when given: absent means 'keep'. (Typed Any: the
    field's type is its value's, and ``None`` only ever stands for 'not given'.)"""
    return Field(default=None, **constraints)


class _Patch(_In):
    """A partial update: absent fields keep their value. ``null`` clears a field only where the column
    may be empty (declared ``X | None``); elsewhere it is refused, never stored."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_hide_null_defaults)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if value is None and name is not None and not _accepts_none(cls.model_fields[name].annotation):
            raise ValueError(f"{name} may not be null; leave it out to keep the current value")
        return value


def _as_utc(value: dt.datetime) -> dt.datetime:
    """The catalog stores UTC; SQLite hands it back without the offset, which the answer must carry."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


Timestamp = Annotated[dt.datetime, AfterValidator(_as_utc)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# -- errors -------------------------------------------------------------------------------------------
class ErrorOut(BaseModel):
    """Every error of the API: what was wrong, in words a user can act on."""

    error: str


class FieldErrorOut(BaseModel):
    loc: list[str | int] = Field(description="where: ['body', 'capacity'], ['query', 'offset'], ...")
    msg: str
    type: str


class ValidationErrorOut(ErrorOut):
    """422: the request's fields (all of them that are wrong), each with its place and message."""

    detail: list[FieldErrorOut]


# -- facilities ---------------------------------------------------------------------------------------
class FacilityIn(_In):
    name: Name
    site: str = Field(default="", max_length=256)
    description: str = ""
    contact: str = Field(default="", max_length=256)
    enabled: bool = True


class FacilityPatch(_Patch):
    site: str = unset(max_length=256)
    description: str = unset()
    contact: str = unset(max_length=256)
    enabled: bool = unset()


class FacilityOut(BaseModel):
    id: int
    name: str
    site: str
    description: str
    contact: str
    enabled: bool
    created_at: Timestamp


# -- backends -----------------------------------------------------------------------------------------
class BackendIn(_In):
    facility: Name
    protocol: Literal["grpc", "http"] = "grpc"
    address: Address
    http_address: Address | None = None
    metrics_address: Address | None = None
    capacity: Capacity = 1.0
    accelerator: str = Field(default="", max_length=256)
    enabled: bool = True
    draining: bool = False


class BackendPatch(_Patch):
    http_address: Address | None = None
    metrics_address: Address | None = None
    capacity: Capacity = unset()
    accelerator: str = unset(max_length=256)
    enabled: bool = unset()
    draining: bool = unset()


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
    last_health_at: Timestamp | None = Field(
        description="when the consistency check last got an answer from this backend"
    )
    observed_models: dict[str, list[str]] = Field(
        description="model -> versions the backend reported ready at that time"
    )
    created_at: Timestamp


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


class DatasetPatch(_Patch):
    experiment: str = unset(max_length=128)
    data_tier: str = unset(max_length=128)
    format: str = unset(max_length=64)
    n_files: Count | None = None
    n_events: Count | None = None
    size_bytes: Count | None = None
    checksum: str | None = Field(default=None, max_length=256)
    storage_uris: list[str] = unset()
    metadata: dict[str, Any] = unset()


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
    created_at: Timestamp


# -- models -------------------------------------------------------------------------------------------
class TensorSpec(_Storable):
    """A tensor as Triton's model configuration describes it; other keys (``dims``...) are kept."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=256)
    datatype: Datatype
    shape: list[Dim]


class ModelVersionIn(_In):
    version: Version
    platform: str = Field(default="", max_length=64)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    max_batch_size: SmallCount = 0
    sha256: Sha256 | None = None
    allowed_groups: list[str] = Field(default_factory=list)
    training_dataset: DatasetName | None = None
    tags: list[str] = Field(default_factory=list)


class ModelVersionPatch(_Patch):
    platform: str = unset(max_length=64)
    inputs: list[TensorSpec] = unset()
    outputs: list[TensorSpec] = unset()
    max_batch_size: SmallCount = unset()
    sha256: Sha256 | None = None
    allowed_groups: list[str] = unset()
    training_dataset: DatasetName | None = None
    tags: list[str] = unset()


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
    created_at: Timestamp


class ModelIn(_In):
    name: ModelName
    description: str = ""
    versions: list[ModelVersionIn] = Field(default_factory=list)


class ModelPatch(_Patch):
    description: str = unset()


class ModelOut(BaseModel):
    id: int
    name: str
    description: str
    versions: list[str]
    created_at: Timestamp


# -- deployments --------------------------------------------------------------------------------------
class DeploymentIn(_In):
    backend_id: Ident
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
    checked_at: Timestamp | None = Field(description="when the verdict was reached")
    created_at: Timestamp


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
    first_seen: Timestamp
    last_seen: Timestamp
