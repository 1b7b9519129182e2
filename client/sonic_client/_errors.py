"""Exceptions raised by the SONIC client."""

from __future__ import annotations

from collections.abc import Sequence


class SonicClientError(Exception):
    """Base class of every error this package raises on purpose."""


class TokenNotFoundError(SonicClientError, LookupError):
    """No bearer token could be found; ``tried`` names every place that was looked at, in order."""

    def __init__(self, tried: Sequence[str]) -> None:
        self.tried: tuple[str, ...] = tuple(tried)
        lines = "\n".join(f"  - {place}" for place in self.tried)
        super().__init__(
            "no bearer token found. Tried, in order (WLCG Bearer Token Discovery):\n"
            f"{lines}\n"
            "Set BEARER_TOKEN or BEARER_TOKEN_FILE, write the token to one of the files above, "
            "or pass token=... to the client."
        )


class TokenRefreshError(SonicClientError):
    """The configured OAuth2 grant failed to produce a fresh access token."""


class InferenceError(SonicClientError):
    """An inference or metadata call failed.

    ``code`` is the gRPC status name (``"UNAVAILABLE"``, ``"RESOURCE_EXHAUSTED"``, ...) or, over
    HTTP, the status name the HTTP code maps to; ``http_status`` is set for HTTP calls.
    ``retry_after`` is the server's hint in seconds, when it sent one. ``attempts`` counts the
    tries made, retries included.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"[{code}] {message}")
        self.message = message
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after
        self.attempts = attempts
