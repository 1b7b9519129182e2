"""The catalog schema as typed SQLAlchemy 2.x ORM classes; ``migrations/`` must produce exactly this."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from gateway.catalog.consistency import UNCHECKED

# Deterministic constraint names, so migrations can name (and drop) them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BACKEND_PROTOCOLS = ("grpc", "http")
DEPLOYMENT_STATES = ("registered", "observed")
# The columns that identify a usage row (the recorder upserts on them).
USAGE_KEY = ("job_id", "dataset", "model", "version", "backend", "subject", "issuer")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, list[dict[str, Any]]: JSON}


class Facility(Base):
    __tablename__ = "facility"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    site: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    contact: Mapped[str] = mapped_column(String(256), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    backends: Mapped[list[Backend]] = relationship(back_populates="facility", cascade="all, delete-orphan")


class Backend(Base):
    """A Triton server of a facility. Only enabled gRPC backends of enabled facilities are routed to."""

    __tablename__ = "backend"
    __table_args__ = (UniqueConstraint("facility_id", "protocol", "address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id", ondelete="CASCADE"), index=True)
    protocol: Mapped[str] = mapped_column(String(8), default="grpc")
    address: Mapped[str] = mapped_column(String(256))
    http_address: Mapped[str | None] = mapped_column(String(256))
    metrics_address: Mapped[str | None] = mapped_column(String(256))
    capacity: Mapped[float] = mapped_column(default=1.0)
    accelerator: Mapped[str] = mapped_column(String(256), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    draining: Mapped[bool] = mapped_column(default=False)
    last_health_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # model -> versions the backend last reported READY (written by the consistency check)
    observed_models: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    facility: Mapped[Facility] = relationship(back_populates="backends")


class Dataset(Base):
    """A dataset by its data identifier (DID), e.g. ``protodune-sp:np04_reco_run5387``."""

    __tablename__ = "dataset"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    experiment: Mapped[str] = mapped_column(String(128), default="", index=True)
    data_tier: Mapped[str] = mapped_column(String(128), default="", index=True)
    format: Mapped[str] = mapped_column(String(64), default="")
    n_files: Mapped[int | None] = mapped_column(BigInteger)
    n_events: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(256))
    storage_uris: Mapped[list[str]] = mapped_column(default=list)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Model(Base):
    __tablename__ = "model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", cascade="all, delete-orphan", order_by="ModelVersion.id"
    )


class ModelVersion(Base):
    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("model.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(64), default="")
    inputs: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    outputs: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    max_batch_size: Mapped[int] = mapped_column(default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    allowed_groups: Mapped[list[str]] = mapped_column(default=list)
    training_dataset_id: Mapped[int | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="SET NULL"), index=True
    )
    created_by: Mapped[str] = mapped_column(String(256), default="")
    tags: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="versions")


class Deployment(Base):
    """A model version on a backend: ``registered`` by an admin or ``observed`` by the health monitor."""

    __tablename__ = "deployment"
    __table_args__ = (UniqueConstraint("backend_id", "model_version_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backend_id: Mapped[int] = mapped_column(ForeignKey("backend.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), default="registered")
    # The consistency check's last verdict (gateway.catalog.consistency: UNCHECKED, CONSISTENT, ...),
    # when it was reached, and why (words an operator can act on).
    consistency: Mapped[str] = mapped_column(String(16), default=UNCHECKED, server_default=UNCHECKED)
    consistency_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    checked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Usage(Base):
    """Provenance: which model version served which job on which dataset, where, for whom; one row per
    key, incremented. The dataset is part of the key: a job reading two datasets has a row for each;
    so is the issuer: a subject is unique only within its issuer.

    Names are stored as text, not foreign keys: usage is history and outlives catalog edits. Absent job
    ids and datasets are stored as ``""`` so that the unique key works the same on every database.
    """

    __tablename__ = "usage"
    __table_args__ = (UniqueConstraint(*USAGE_KEY),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(256), index=True)
    dataset: Mapped[str] = mapped_column(String(512), default="", index=True)
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(64))
    facility: Mapped[str] = mapped_column(String(128), index=True)
    backend: Mapped[str] = mapped_column(String(512))
    subject: Mapped[str] = mapped_column(String(256))
    issuer: Mapped[str] = mapped_column(String(512), default="")
    n_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    n_inferences: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
