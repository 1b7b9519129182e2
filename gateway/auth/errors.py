"""Auth-specific refinements of the gateway's errors: the RFC 6750 code plus a finer ``detail``.

``reason`` (inherited) is the RFC 6750 error code the frontends put in ``WWW-Authenticate``
(``invalid_request``, ``invalid_token``, ``insufficient_scope``); ``detail`` is a short code from a
fixed vocabulary (``expired``, ``bad_signature``, ...) used in metrics and tests. Both are safe to
show: neither ever contains the token.
"""

from __future__ import annotations

from gateway.errors import PermissionDenied, Unauthenticated


class TokenRejected(Unauthenticated):
    """The request's credentials did not validate (HTTP 401 / gRPC UNAUTHENTICATED)."""

    def __init__(self, detail: str, message: str, reason: str = "invalid_token") -> None:
        super().__init__(message, reason)
        self.detail = detail


class AccessDenied(PermissionDenied):
    """A valid token without the scope or group the call needs (HTTP 403 / PERMISSION_DENIED)."""

    def __init__(self, detail: str, message: str, reason: str = "insufficient_scope") -> None:
        super().__init__(message, reason)
        self.detail = detail
