"""Retry policy: bounded exponential backoff with full jitter, within a time budget, honouring
the server's retry-after hint."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RETRYABLE_CODES", "RetryPolicy"]

#: Only these are worth retrying: the gateway or a backend is momentarily unreachable or full
#: (a restart, a rolling update, a connection refused or reset). UNAUTHENTICATED,
#: PERMISSION_DENIED, NOT_FOUND, INVALID_ARGUMENT, DEADLINE_EXCEEDED, INTERNAL... are not retried:
#: sending the same request again cannot change the answer (or would run past the caller's
#: deadline). UNAUTHENTICATED gets one retry of its own after the token source is re-read (see
#: :class:`sonic_client.Client`).
RETRYABLE_CODES: frozenset[str] = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED"})

#: Clock readings are floats: less than this much budget left is no budget left (no retry after a
#: microsecond's sleep because 0.1 + 0.2 != 0.3).
_EPSILON_S = 1e-6


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how patiently to retry a call that failed with a retryable status.

    A call is retried for up to ``budget`` seconds after its first retryable failure (and at most
    ``max_attempts`` tries in all, when that is set). The defaults ride out a gateway restart or
    rolling update of a minute and more without any change to the job.

    The n-th retry (n = 1, 2, ...) waits a uniformly random time in
    ``[0, min(max_backoff, initial_backoff * multiplier**(n-1))]`` ("full jitter", so that many
    jobs rejected together do not come back together). The small ``max_backoff`` keeps the job
    trying about once a second, so it reconnects promptly once the gateway listens again. When
    the server sent ``retry-after``, the wait is at least that long (capped at
    ``max_retry_after``); a hint that reaches past the budget ends the retries. The last backoff
    is shortened so that one attempt falls at the end of the budget.
    """

    max_attempts: int | None = None
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: bool = True
    max_retry_after: float = 60.0
    budget: float = 90.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None: limited by the budget)")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if not self.budget >= 0:
            raise ValueError(f"budget must be a number of seconds >= 0, not {self.budget!r}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1, budget=0.0)

    def should_retry(self, code: str, attempt: int, elapsed: float = 0.0) -> bool:
        """Whether to try again after ``attempt`` (1-based) tries failed with ``code``,
        ``elapsed`` seconds after the first retryable failure."""
        if code not in RETRYABLE_CODES or elapsed >= self.budget - _EPSILON_S:
            return False
        return self.max_attempts is None or attempt < self.max_attempts

    def delay(self, retry: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based), budget not considered."""
        cap = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        if self.jitter:
            cap = (rng or random).uniform(0.0, cap)  # jitter, not cryptography
        if retry_after is not None and retry_after > 0:
            cap = max(cap, min(retry_after, self.max_retry_after))
        return cap

    def next_delay(self, code: str, attempt: int, elapsed: float,
                   retry_after: float | None = None,
                   rng: random.Random | None = None) -> float | None:
        """Seconds to sleep before the next try, or None to give up.

        ``attempt`` tries (1-based) failed, the last with ``code``; the first retryable failure
        was ``elapsed`` seconds ago.
        """
        if not self.should_retry(code, attempt, elapsed):
            return None
        remaining = self.budget - elapsed
        hint = min(retry_after, self.max_retry_after) if retry_after and retry_after > 0 else 0.0
        if hint > remaining:
            return None  # the server asks us to come back after our budget: give up now
        return min(self.delay(attempt, retry_after, rng), remaining)


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
