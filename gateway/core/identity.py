"""Who is calling: the Principal a validated token becomes, and the Authenticator interface.

The core depends only on this interface; ``gateway.auth`` provides the real, token-validating
implementation. Authentication fails closed: any doubt is :class:`~gateway.errors.Unauthenticated`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Principal:
    """A caller, normalised across token profiles (WLCG, SciTokens, OIDC)."""

    issuer: str
    subject: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    groups: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None

    @property
    def display(self) -> str:
        """Safe for logs: issuer and subject, never the token."""
        return f"{self.subject}@{self.issuer}"


ANONYMOUS = Principal(issuer="", subject="anonymous")


class Authenticator(Protocol):
    """Turns the value of an ``authorization`` header (or gRPC metadata) into a Principal."""

    async def authenticate(self, authorization: str | None, *, quiet: bool = False) -> Principal:
        """Return the caller, or raise ``Unauthenticated`` with a reason a user can act on.

        ``quiet``: a refusal is neither counted nor logged, because it answers a pre-check (Envoy's
        verdict) whose request is then answered, counted and logged by the Python path.
        """
        ...


class Authorizer(Protocol):
    """Decides what a Principal may do; raises ``PermissionDenied`` with a reason."""

    def authorize_infer(self, principal: Principal, model: str) -> None:
        """Inference (and model metadata) on ``model``: issuer's required scopes, model's groups."""
        ...

    def authorize_admin(self, principal: Principal) -> None:
        """Admin and catalog writes: an admin scope or an admin group from the config."""
        ...


class AllowAllAuthenticator:
    """Used only when ``auth.enabled`` is false (benchmarks of auth cost, local experiments)."""

    async def authenticate(self, authorization: str | None, *, quiet: bool = False) -> Principal:
        return ANONYMOUS


class AllowAllAuthorizer:
    """Pairs with :class:`AllowAllAuthenticator` when auth is disabled."""

    def authorize_infer(self, principal: Principal, model: str) -> None:
        return None

    def authorize_admin(self, principal: Principal) -> None:
        return None
