"""What Envoy asks the control plane, on its loopback HTTP port (never on the public listener).

- ``GET /internal/jwks/<provider>``: the signing keys ``gateway.auth.keys`` vetted (allow-listed
  URLs, strong keys, kid-flood limits). Envoy's jwt_authn never fetches an issuer's keys itself.
- ``POST /internal/verify``: the gateway's validator's verdict on one Authorization value, which the
  policy filter caches per token until it expires. Envoy fast-paths a token only when its own
  signature check with the vetted keys AND this verdict accept it, so Envoy can never accept a token
  the Python validator rejects.

The public listener answers 404 for ``/internal/`` (``render.render_routes``).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from gateway.auth.keys import IssuerKeys, public_jwk
from gateway.core.identity import Authenticator, Authorizer
from gateway.envoy.render import encode_name
from gateway.errors import GatewayError, PermissionDenied, Unauthenticated

# How long the policy filter remembers a refusal (the Python path then answers it precisely).
REFUSAL_CACHE_S = 5
MAX_AUTHORIZATION_BYTES = 8300


def verdict_text(authenticated: tuple[str, str, float, frozenset[str]] | None) -> str:
    """The verdict's wire form: ``ok``, expiry, issuer, subject, groups (one per line, encoded)."""
    if authenticated is None:
        return f"no\n{REFUSAL_CACHE_S}\n"
    issuer, subject, expires_at, groups = authenticated
    lines = ["ok", str(int(expires_at)), encode_name(issuer), encode_name(subject)]
    lines += [encode_name(g) for g in sorted(groups)]
    return "\n".join(lines) + "\n"


def internal_router(
    keys_by_provider: dict[str, IssuerKeys], authenticator: Authenticator, authorizer: Authorizer
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/internal/jwks/{provider}")
    async def jwks(provider: str) -> JSONResponse:
        keys = keys_by_provider.get(provider)
        if keys is None:
            return JSONResponse(
                {"error": f"no issuer is configured as provider {provider[:40]!r}"}, status_code=404
            )
        vetted = await keys.vetted()
        # An empty set is still a valid answer: every token then falls through to Python, which
        # says why (e.g. the issuer is unreachable).
        return JSONResponse(
            {"keys": [public_jwk(k) for k in vetted.values()]}, headers={"cache-control": "no-store"}
        )

    @router.post("/internal/verify")
    async def verify(request: Request) -> PlainTextResponse:
        raw = await request.body()
        if len(raw) > MAX_AUTHORIZATION_BYTES:
            return PlainTextResponse(verdict_text(None))
        try:
            principal = await authenticator.authenticate(raw.decode("latin-1"))
            authorizer.authorize_infer(principal, "")  # issuer and scopes; model groups: per route
        except (Unauthenticated, PermissionDenied):
            return PlainTextResponse(verdict_text(None))
        except GatewayError as exc:  # e.g. keys unavailable: no verdict, nothing cached
            return PlainTextResponse(exc.message, status_code=503)
        expires = principal.expires_at if principal.expires_at is not None else time.time() + 60
        return PlainTextResponse(
            verdict_text((principal.issuer, principal.subject, expires, principal.groups))
        )

    return router
