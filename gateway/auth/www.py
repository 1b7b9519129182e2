"""The RFC 6750 ``WWW-Authenticate`` header value for an auth error (called by the HTTP frontend)."""

from __future__ import annotations

from gateway.errors import GatewayError, PermissionDenied, Unauthenticated

_MAX_DESCRIPTION = 300
_RFC6750_CODES = frozenset({"invalid_request", "invalid_token", "insufficient_scope"})


def _quoted(value: str, limit: int = _MAX_DESCRIPTION) -> str:
    """An RFC 9110 quoted-string of printable ASCII: no CR/LF (no header injection)."""
    out = []
    for ch in value[:limit]:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(" " if ch in "\t\r\n" else "?")
    return '"' + "".join(out) + '"'


def www_authenticate(error: GatewayError | None = None, *, realm: str | None = None) -> str:
    """``Bearer error="...", error_description="..."`` for 401/403 answers; bare ``Bearer`` otherwise."""
    params: list[str] = []
    if realm is not None:
        params.append(f"realm={_quoted(realm)}")
    if isinstance(error, Unauthenticated | PermissionDenied):
        default = "insufficient_scope" if isinstance(error, PermissionDenied) else "invalid_token"
        code = error.reason if error.reason in _RFC6750_CODES else default
        params.append(f'error="{code}"')
        params.append(f"error_description={_quoted(error.message)}")
    return "Bearer " + ", ".join(params) if params else "Bearer"
