"""What Envoy asks the control plane, on its loopback HTTP port (never on the public listener).

``POST /internal/verify``: the gateway's validator's verdict on one Authorization value (signature
with the keys ``gateway.auth.keys`` vetted, every profile rule, the issuer's scopes), which the
policy filter caches per token until it expires. It is the only thing that admits a token to the
fast path, so Envoy can never accept a token the Python validator rejects.

The public listener answers 404 for ``/internal/`` (``render.render_routes``).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

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


def internal_router(authenticator: Authenticator, authorizer: Authorizer) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.post("/internal/verify")
    async def verify(request: Request) -> PlainTextResponse:
        raw = await request.body()
        if len(raw) > MAX_AUTHORIZATION_BYTES:
            return PlainTextResponse(verdict_text(None))
        try:
            # Quiet: a refused token's request goes on to the Python path, which counts and logs
            # the refusal once, as it answers it.
            principal = await authenticator.authenticate(raw.decode("latin-1"), quiet=True)
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
