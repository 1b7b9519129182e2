from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import respx
from prometheus_client import CollectorRegistry

from gateway.auth import TokenAuthenticator, build_auth
from gateway.auth.authenticator import PolicyAuthorizer
from gateway.config import AuthSettings

from .helpers import TestIssuer


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer("https://issuer.test")


@pytest.fixture
def router() -> Any:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
def monotonic() -> FakeClock:
    return FakeClock(1000.0)


Factory = Callable[..., tuple[TokenAuthenticator, PolicyAuthorizer]]


@pytest.fixture
async def make_auth(registry: CollectorRegistry, monotonic: FakeClock) -> AsyncIterator[Factory]:
    built: list[tuple[TokenAuthenticator, httpx.AsyncClient]] = []

    def factory(settings: AuthSettings, **kwargs: Any) -> tuple[TokenAuthenticator, PolicyAuthorizer]:
        client = httpx.AsyncClient()
        kwargs.setdefault("monotonic", monotonic)
        authn, authz = build_auth(settings, http_client=client, registry=registry, **kwargs)
        assert isinstance(authn, TokenAuthenticator)
        assert isinstance(authz, PolicyAuthorizer)
        built.append((authn, client))
        return authn, authz

    yield factory
    for authn, client in built:
        await authn.aclose()
        await client.aclose()


@pytest.fixture
def serve_jwks(router: Any, issuer: TestIssuer) -> Any:
    """The issuer's JWKS endpoint, answering with its current keys."""
    return router.get(issuer.jwks_uri).mock(
        side_effect=lambda request: httpx.Response(200, json=issuer.jwks())
    )


@pytest.fixture
def auth(
    make_auth: Factory, issuer: TestIssuer, serve_jwks: Any
) -> tuple[TokenAuthenticator, PolicyAuthorizer]:
    return make_auth(AuthSettings(issuers=[issuer.settings()]))
