"""One exception hierarchy for the whole gateway, and the ONE table that maps it to protocol status.

The core raises these; the gRPC and HTTP adapters translate them with :func:`status_of`. The gRPC
code is kept as the name of a ``grpc.StatusCode`` member so that this module (and the core) does not
import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway answers a client with.

    ``message`` is shown to the client: it says what was wrong and what to do, and never contains a
    token.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# How much of a client-supplied name an error message repeats: a message is sent back as gRPC
# status details (a header, 8 KiB by default on the client), so echoing a huge name would turn the
# answer into a client-side RESOURCE_EXHAUSTED.
ECHO_LIMIT = 200


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for an error message, cut to about ``limit`` characters (the cut is said)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


class InvalidArgument(GatewayError):
    """The request is malformed (bad protobuf, missing model name, bad JSON)."""


class InvalidField(InvalidArgument):
    """A request field holds a value that cannot be taken (an unknown reference, a null where a value is
    needed, text or a number the catalog cannot store). ``loc`` names the field, as a validation error's
    ``loc`` does (``("body", "facility")``, ``("query", "name")``)."""

    def __init__(self, message: str, loc: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.loc = loc


class Unauthenticated(GatewayError):
    """No token, or a token that did not validate. ``reason`` is a short machine-readable code."""

    def __init__(self, message: str, reason: str = "invalid_token") -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(GatewayError):
    """A valid token that lacks the scope or group the call needs."""

    def __init__(self, message: str, reason: str = "insufficient_scope") -> None:
        super().__init__(message)
        self.reason = reason


class ModelNotFound(GatewayError):
    """No registered backend serves the model (or the requested version)."""


class Unavailable(GatewayError):
    """Backends serve the model but none of them can take the request now."""


class BackendUnreachable(Unavailable):
    """The request never reached the backend (connection refused, draining): safe to retry elsewhere."""


class ResourceExhausted(GatewayError):
    """A rate limit or quota was hit; ``retry_after_s`` tells the client when to come back."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotFound(GatewayError):
    """No catalog entry (facility, backend, dataset, ...) with that id."""


class Conflict(GatewayError):
    """The change contradicts what the catalog holds (a name that must be unique is taken)."""


class PayloadTooLarge(GatewayError):
    """The request body is larger than the configured limit."""


class DeadlineExceeded(GatewayError):
    """The caller's deadline ran out before a backend answered."""


class ClientGone(GatewayError):
    """The caller disconnected before the answer: its work was cancelled (nobody to answer)."""


class Unimplemented(GatewayError):
    """The call exists in the protocol but the gateway does not offer it (and says why)."""


class BackendError(GatewayError):
    """A backend answered with an error: passed through with the backend's own status and message."""

    def __init__(self, message: str, grpc_code: str, http_status: int) -> None:
        super().__init__(message)
        self.grpc_code = grpc_code
        self.http_status = http_status


@dataclass(frozen=True)
class ProtocolStatus:
    grpc_code: str  # name of a grpc.StatusCode member
    http_status: int


# THE table. Order matters: subclasses before their bases (first isinstance match wins).
_STATUS_TABLE: tuple[tuple[type[GatewayError], ProtocolStatus], ...] = (
    (InvalidField, ProtocolStatus("INVALID_ARGUMENT", 422)),
    (InvalidArgument, ProtocolStatus("INVALID_ARGUMENT", 400)),
    (Unauthenticated, ProtocolStatus("UNAUTHENTICATED", 401)),
    (PermissionDenied, ProtocolStatus("PERMISSION_DENIED", 403)),
    (ModelNotFound, ProtocolStatus("NOT_FOUND", 404)),
    (NotFound, ProtocolStatus("NOT_FOUND", 404)),
    (Conflict, ProtocolStatus("ALREADY_EXISTS", 409)),
    (PayloadTooLarge, ProtocolStatus("RESOURCE_EXHAUSTED", 413)),
    (ResourceExhausted, ProtocolStatus("RESOURCE_EXHAUSTED", 429)),
    (Unimplemented, ProtocolStatus("UNIMPLEMENTED", 501)),
    (DeadlineExceeded, ProtocolStatus("DEADLINE_EXCEEDED", 504)),
    (ClientGone, ProtocolStatus("CANCELLED", 499)),
    (Unavailable, ProtocolStatus("UNAVAILABLE", 503)),
)

# gRPC code name -> HTTP status, for errors passed through from a backend.
GRPC_TO_HTTP: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


def status_of(error: GatewayError) -> ProtocolStatus:
    """The protocol status for ``error``; backend errors keep the backend's own status."""
    if isinstance(error, BackendError):
        return ProtocolStatus(error.grpc_code, error.http_status)
    for kind, status in _STATUS_TABLE:
        if isinstance(error, kind):
            return status
    return ProtocolStatus("INTERNAL", 500)
