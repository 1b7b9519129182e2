"""Typed settings: a YAML file (``--config`` or ``SONIC_GATEWAY_CONFIG``) overridden by environment.

Every key can be overridden by ``SONIC_GATEWAY_<KEY>``; nested keys use ``__``, e.g.
``SONIC_GATEWAY_LISTEN__GRPC=0.0.0.0:8001``. Settings are built by :func:`load_settings`, never at
import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ENV_PREFIX = "SONIC_GATEWAY_"


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


def parse_address(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed) and check the port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not an address of the form host:port")
    return host.strip("[]"), int(port)


def _check_address(value: str | None) -> str | None:
    if value is not None:
        parse_address(value)
    return value


class ListenSettings(BaseModel):
    http: str = "127.0.0.1:8000"
    grpc: str = "127.0.0.1:8001"

    _check = field_validator("http", "grpc")(_check_address)


class IssuerSettings(BaseModel):
    """One trusted token issuer; ``profile`` decides which claims are required."""

    issuer: str
    profile: Literal["wlcg", "scitokens", "oidc"] = "wlcg"
    audience: list[str] = Field(default_factory=list)
    jwks_uri: str | None = None
    required_scopes: list[str] = Field(default_factory=list)
    groups_claim: str | None = None
    insecure: bool = False
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    max_lifetime_s: float = 6 * 3600
    leeway_s: float = 60
    allow_any_audience: bool = False


class AuthSettings(BaseModel):
    enabled: bool = True
    issuers: list[IssuerSettings] = Field(default_factory=list)
    admin_scopes: list[str] = Field(default_factory=lambda: ["gateway.admin"])
    admin_groups: list[str] = Field(default_factory=list)


class BackendSettings(BaseModel):
    """A Triton server of a facility, given statically in the config file."""

    facility: str
    grpc: str
    http: str | None = None
    metrics: str | None = None
    capacity: float = Field(default=1.0, gt=0)

    _check = field_validator("grpc", "http", "metrics")(_check_address)


class RoutingSettings(BaseModel):
    health_interval_s: float = Field(default=2.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    # Requests without a client deadline still must not hang forever on a stuck backend.
    default_timeout_s: float = Field(default=300.0, gt=0)
    max_message_bytes: int = Field(default=512 * 1024 * 1024, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", yaml_file_encoding="utf-8"
    )

    listen: ListenSettings = Field(default_factory=ListenSettings)
    database_url: str = "sqlite:///sonic-gateway.db"
    redis_url: str | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    backends: list[BackendSettings] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    log_level: str = "INFO"


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: object) -> Settings:
    """Build settings from ``path`` (or ``$SONIC_GATEWAY_CONFIG``), the environment, and ``overrides``.

    Precedence, highest first: ``overrides`` (from code/CLI), environment, YAML file, defaults.
    """
    chosen = path if path is not None else os.environ.get(f"{ENV_PREFIX}CONFIG")
    try:
        if chosen is None:
            return Settings(**overrides)  # type: ignore[arg-type]
        file = Path(chosen)
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} does not exist; pass --config with a YAML file")

        class FileSettings(Settings):
            model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": file})

            @classmethod
            def settings_customise_sources(
                cls,
                settings_cls: type[BaseSettings],
                init_settings: PydanticBaseSettingsSource,
                env_settings: PydanticBaseSettingsSource,
                dotenv_settings: PydanticBaseSettingsSource,
                file_secret_settings: PydanticBaseSettingsSource,
            ) -> tuple[PydanticBaseSettingsSource, ...]:
                return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

        return FileSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
