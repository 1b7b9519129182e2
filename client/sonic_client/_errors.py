"""Exceptions raised by the SONIC client."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone


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


class TokenExpiredError(SonicClientError):
    """The token source holds a token whose ``exp`` claim has passed; the client will not send it.

    ``source`` names where the token came from, ``expired_at`` is its ``exp`` (Unix time) and
    ``age`` how many seconds ago that was. The token itself is never part of the error.
    """

    def __init__(self, source: str | None, expired_at: float, now: float) -> None:
        self.source = source or "the token provider"
        self.expired_at = expired_at
        self.age = now - expired_at
        when = datetime.fromtimestamp(expired_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"the bearer token from {self.source} expired {self.age:.0f} s ago (exp {when}); "
            "not sending it. Renew it (your token agent, htgettoken or oidc-token) "
            "or pass a fresh token=... to the client."
        )


class TokenRefreshError(SonicClientError):
    """The configured OAuth2 grant failed to produce a fresh access token."""


class MissingDependencyError(SonicClientError, ImportError):
    """A feature needs an optional dependency that is not installed; the message names the extra."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(
            f"{feature} needs the '{module}' package, which is not installed. "
            f"Install the client with that feature: pip install 'sonic-client[{extra}]'",
            name=module,
        )


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

    def add_detail(self, detail: str) -> None:
        """Append what the client did about the failure (retries, token re-reads) to the message."""
        self.message = f"{self.message} ({detail})"
        self.args = (f"[{self.code}] {self.message}",)
