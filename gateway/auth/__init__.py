"""Federated identity: bearer tokens from several OIDC/WLCG/SciTokens issuers -> Principal -> policy.

The core uses :func:`build_auth`; the HTTP frontend also uses :func:`www_authenticate`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from gateway.auth.authenticator import ModelGroups, PolicyAuthorizer, TokenAuthenticator
from gateway.auth.dev_issuer import DevIssuer, issuer_settings
from gateway.auth.errors import AccessDenied, TokenRejected
from gateway.auth.keys import HttpKeyFetcher, IssuerKeys
from gateway.auth.validator import TokenValidator, TrustedIssuer
from gateway.auth.www import www_authenticate
from gateway.config import AuthSettings, IssuerSettings
from gateway.core.identity import AllowAllAuthenticator, AllowAllAuthorizer, Authenticator, Authorizer

__all__ = [
    "AccessDenied",
    "ModelGroups",
    "PolicyAuthorizer",
    "TokenAuthenticator",
    "TokenRejected",
    "build_auth",
    "new_http_client",
    "trusted_issuers",
    "www_authenticate",
]

log = logging.getLogger("gateway.auth")


def new_http_client(settings: AuthSettings) -> httpx.AsyncClient:
    """The client for discovery and JWKS: certificate verification on, no redirects, bounded."""
    return httpx.AsyncClient(
        verify=True,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.http_timeout_s),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=5),
    )


def trusted_issuers(settings: AuthSettings) -> list[IssuerSettings]:
    """The configured issuers plus, when enabled, the dev issuer (in that order)."""
    issuers = list(settings.issuers)
    if settings.dev_issuer.enabled:
        issuers.append(issuer_settings(settings.dev_issuer))
    return issuers


def build_auth(
    settings: AuthSettings,
    *,
    http_client: httpx.AsyncClient | None = None,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> tuple[Authenticator, Authorizer]:
    """The Authenticator/Authorizer pair for ``settings`` (AllowAll when ``settings.enabled`` is false).

    A client passed in stays the caller's to close; one created here is closed by
    ``TokenAuthenticator.aclose()``. ``clock``/``monotonic`` are for tests.
    """
    if not settings.enabled:
        log.warning("authentication is DISABLED (auth.enabled: false): every call is allowed")
        return AllowAllAuthenticator(), AllowAllAuthorizer()
    owned = http_client is None
    client = new_http_client(settings) if http_client is None else http_client
    issuers: dict[str, TrustedIssuer] = {}
    for entry in trusted_issuers(settings):
        fetch: Callable[[], Any]
        if settings.dev_issuer.enabled and entry.issuer == settings.dev_issuer.issuer:
            dev = DevIssuer(settings.dev_issuer)

            async def fetch(dev: DevIssuer = dev) -> Any:
                return await asyncio.to_thread(dev.public_jwks)

            log.warning("trusting the DEVELOPMENT issuer %s (keys in %s)", entry.issuer, dev.key_dir)
        else:
            fetch = HttpKeyFetcher(
                entry, client, timeout_s=settings.http_timeout_s, max_bytes=settings.max_document_bytes
            )
        keys = IssuerKeys(
            entry.issuer,
            fetch,
            refresh_s=settings.jwks_refresh_s,
            max_stale_s=settings.jwks_max_stale_s,
            unknown_kid_interval_s=settings.jwks_unknown_kid_interval_s,
            clock=monotonic or time.monotonic,
        )
        issuers[entry.issuer] = TrustedIssuer(
            settings=entry,
            keys=keys,
            audiences=frozenset(entry.audience),
            algorithms=frozenset(entry.algorithms),
            groups_claim=entry.effective_groups_claim,
        )
    if not issuers:
        log.warning("auth is enabled but no issuer is trusted: every call will be rejected")
    validator = TokenValidator(issuers, clock=clock or time.time)
    authenticator = TokenAuthenticator(
        validator,
        cache_size=settings.token_cache_size,
        registry=registry,
        clock=clock or time.time,
        on_close=client.aclose if owned else None,
    )
    return authenticator, PolicyAuthorizer(settings, list(trusted_issuers(settings)))
