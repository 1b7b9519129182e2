"""The token-validating Authenticator (with the per-token cache and metrics) and the Authorizer."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import Counter

from gateway.auth.errors import AccessDenied, TokenRejected
from gateway.auth.jose import MAX_TOKEN_BYTES, parse_compact
from gateway.auth.metrics import UNKNOWN_ISSUER, token_validations
from gateway.auth.safelog import safe
from gateway.auth.validator import TokenValidator, ValidatedToken
from gateway.config import AuthSettings, IssuerSettings
from gateway.core.identity import Principal
from gateway.errors import Unavailable

log = logging.getLogger("gateway.auth")

# "Bearer " + a token, with room for surrounding whitespace; longer headers are refused unparsed.
MAX_HEADER_LENGTH = MAX_TOKEN_BYTES + 64
_UNPARSED = frozenset({"missing_token", "unsupported_scheme", "malformed_header", "too_large", "malformed"})
ModelGroups = Callable[[str], frozenset[str] | None]


def _not_counted(authorization: str | None, detail: str, why: str) -> None:
    """A quiet refusal: the Python path that answers the request counts and logs it."""


class TokenAuthenticator:
    """``authenticate("Bearer <jwt>") -> Principal``; a cached token costs a hash and a dict lookup."""

    def __init__(
        self,
        validator: TokenValidator,
        *,
        cache_size: int = 100_000,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.validator = validator
        self._cache: dict[bytes, ValidatedToken] = {}
        self._cache_size = cache_size
        self._clock = clock
        self._on_close = on_close
        self._counter: Counter = token_validations(registry)
        # Children bound once, so the hot path does not resolve labels.
        self._cached_ok = {iss: self._counter.labels(iss, "accepted", "cached") for iss in validator.issuers}
        self._validated_ok = {
            iss: self._counter.labels(iss, "accepted", "validated") for iss in validator.issuers
        }

    @staticmethod
    def bearer_token(authorization: str | None) -> str:
        """The token of an ``Authorization: Bearer <token>`` value (RFC 6750 §2.1)."""
        if authorization is None or not authorization.strip():
            raise TokenRejected(
                "missing_token",
                "this call needs a bearer token: send the header 'authorization: Bearer <token>'",
                reason="invalid_request",
            )
        if len(authorization) > MAX_HEADER_LENGTH:
            raise TokenRejected("too_large", f"the bearer token is longer than {MAX_TOKEN_BYTES} bytes")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise TokenRejected(
                "unsupported_scheme",
                "only the Bearer authorization scheme is accepted: 'authorization: Bearer <token>'",
                reason="invalid_request",
            )
        token = token.strip(" ")
        if not token or " " in token or "\t" in token:
            raise TokenRejected(
                "malformed_header",
                "the authorization header must be exactly 'Bearer <token>'",
                reason="invalid_request",
            )
        return token

    async def authenticate(self, authorization: str | None, *, quiet: bool = False) -> Principal:
        count_rejection = _not_counted if quiet else self._count_rejection
        try:
            token = self.bearer_token(authorization)
            digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
            hit = self._cache.get(digest)
            if hit is not None:
                if hit.cache_until > self._clock():
                    self._cached_ok[hit.principal.issuer].inc()
                    return hit.principal
                del self._cache[digest]
            validated = await self.validator.validate(token)
        except TokenRejected as exc:
            count_rejection(authorization, exc.detail, exc.message)
            raise
        except Unavailable as exc:
            count_rejection(authorization, "keys_unavailable", exc.message)
            raise
        except Exception as exc:  # fail closed: a library surprise is a bad token, never a 500
            log.warning("token validation failed unexpectedly: %s", type(exc).__name__)
            count_rejection(authorization, "malformed", "the bearer token could not be parsed")
            raise TokenRejected("malformed", "the bearer token could not be parsed") from None
        self._remember(digest, validated)
        self._validated_ok[validated.principal.issuer].inc()
        return validated.principal

    def _remember(self, digest: bytes, validated: ValidatedToken) -> None:
        if len(self._cache) >= self._cache_size:
            now = self._clock()
            for key in [k for k, v in self._cache.items() if v.cache_until <= now]:
                del self._cache[key]
            while len(self._cache) >= self._cache_size:  # still full: drop the oldest entries
                del self._cache[next(iter(self._cache))]
        self._cache[digest] = validated

    def _count_rejection(self, authorization: str | None, detail: str, why: str) -> None:
        issuer = UNKNOWN_ISSUER
        if detail not in _UNPARSED:
            issuer = self._claimed_issuer(authorization)
        self._counter.labels(issuer, "rejected", detail).inc()
        # Why, in the words the client was told (messages never contain the token), never the token.
        log.info("token rejected (%s): issuer=%s: %s", detail, safe(issuer), safe(why, 300))

    def _claimed_issuer(self, authorization: str | None) -> str:
        """The configured issuer the token claims, for the metric label; anything else is unknown."""
        try:
            iss = parse_compact(self.bearer_token(authorization)).payload.get("iss")
        except Exception:
            return UNKNOWN_ISSUER
        return iss if isinstance(iss, str) and iss in self.validator.issuers else UNKNOWN_ISSUER

    def clear_cache(self) -> None:
        self._cache.clear()

    async def aclose(self) -> None:
        for trusted in self.validator.issuers.values():
            await trusted.keys.aclose()
        if self._on_close is not None:
            await self._on_close()


class PolicyAuthorizer:
    """Scopes and groups -> allowed or PermissionDenied (``insufficient_scope``)."""

    def __init__(self, settings: AuthSettings, issuers: list[IssuerSettings]) -> None:
        self._required = {i.issuer: frozenset(i.required_scopes) for i in issuers}
        self._admin_scopes = frozenset(settings.admin_scopes)
        self._admin_groups = frozenset(settings.admin_groups)
        self.model_groups: ModelGroups = lambda model: None

    def set_model_groups(self, model_groups: ModelGroups) -> None:
        """The catalog's lookup of a model's allowed groups (None: unrestricted)."""
        self.model_groups = model_groups

    def authorize_infer(self, principal: Principal, model: str) -> None:
        required = self._required.get(principal.issuer)
        if required is None:
            raise AccessDenied("unknown_issuer", "the caller's issuer is not trusted for inference")
        missing = required - principal.scopes
        if missing:
            raise AccessDenied(
                "missing_scope",
                f"inference needs the scope(s) {', '.join(sorted(missing))}; "
                "request a token that includes them",
            )
        allowed = self.model_groups(model)
        if allowed is not None and not (allowed & principal.groups):
            raise AccessDenied(
                "group_not_allowed",
                f"model {safe(model, 100)} is restricted to the group(s) {', '.join(sorted(allowed))}; "
                "your token asserts none of them",
            )

    def authorize_admin(self, principal: Principal) -> None:
        if principal.issuer not in self._required:
            raise AccessDenied("unknown_issuer", "the caller's issuer is not trusted for admin calls")
        if self._admin_scopes & principal.scopes or self._admin_groups & principal.groups:
            return
        wanted = [f"scope {s}" for s in sorted(self._admin_scopes)]
        wanted += [f"group {g}" for g in sorted(self._admin_groups)]
        raise AccessDenied(
            "not_admin",
            "admin calls need "
            + (" or ".join(wanted) if wanted else "an admin scope or group (none configured)"),
        )
