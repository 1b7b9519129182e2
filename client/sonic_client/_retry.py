"""Retry policy: exponential backoff with full jitter, honouring the server's retry-after hint."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RETRYABLE_CODES", "RetryPolicy"]

#: Only these are worth retrying: the gateway or a backend is momentarily unreachable or full.
#: UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT, DEADLINE_EXCEEDED, INTERNAL...
#: are not retried: sending the same request again cannot change the answer (or would run past the
#: caller's deadline).
RETRYABLE_CODES: frozenset[str] = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a call that failed with a retryable status.

    The n-th retry (n = 1, 2, ...) waits a uniformly random time in
    ``[0, min(max_backoff, initial_backoff * multiplier**(n-1))]`` ("full jitter", so that many
    jobs rejected together do not come back together). When the server sent ``retry-after``,
    the wait is at least that long (capped at ``max_retry_after``).
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: bool = True
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def should_retry(self, code: str, attempt: int) -> bool:
        """Whether to try again after ``attempt`` (1-based) tries failed with ``code``."""
        return code in RETRYABLE_CODES and attempt < self.max_attempts

    def delay(self, retry: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based)."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        if self.jitter:
            cap = (rng or random).uniform(0.0, cap)  # jitter, not cryptography
        if retry_after is not None and retry_after > 0:
            cap = max(cap, min(retry_after, self.max_retry_after))
        return cap


def parse_retry_after(value: str | bytes | None) -> float | None:
    """Seconds from a ``retry-after`` value (delta-seconds; HTTP dates are accepted too)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        import time

        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if seconds == seconds else None  # NaN guard
