"""Usage/provenance events: which model version served which job, recorded off the hot path.

The data path only appends to a recorder; a real recorder (the catalog's batched database writer)
flushes in the background. The in-memory recorder is the embedded default and the test double.
"""

from __future__ import annotations

import time
import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote


def decode_tag(value: str | None) -> str | None:
    """A provenance tag (``sonic-job-id``, ``sonic-dataset``) as the client wrote it.

    gRPC metadata must be printable ASCII, so the client (``sonic_client._provenance``) sends a value
    that is not as UTF-8 percent-encoding, and any other value unchanged. Decoding is therefore taken
    only when it yields a character beyond ASCII: a printable-ASCII value was never encoded, and a
    ``%`` in it is literal (``run%41`` stays ``run%41``). A decoded control character, or bytes that
    are not UTF-8, mean the value was not the client's encoding: it is kept as received. Pure (no I/O,
    no state): every place usage enters the gateway (frontends, Envoy's access log) calls it.
    """
    if value is None:
        return None
    value = value.strip()
    if "%" not in value:
        return value
    try:
        decoded = unquote(value, errors="strict")
    except UnicodeDecodeError:
        return value
    if decoded.isascii() or any(unicodedata.category(c) in ("Cc", "Cs") for c in decoded):
        return value
    return decoded


@dataclass(frozen=True)
class UsageEvent:
    model: str
    version_requested: str
    version_served: str
    facility: str
    backend_id: str
    subject: str
    issuer: str
    job_id: str | None = None
    dataset: str | None = None
    inferences: int = 0
    requests: int = 1
    timestamp: float = field(default_factory=time.time)


class UsageRecorder(Protocol):
    def record(self, event: UsageEvent) -> None:
        """Accept an event without blocking; never raises into the data path."""
        ...


class InMemoryRecorder:
    """Keeps the last ``capacity`` events in memory; counts what it had to drop."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.events: deque[UsageEvent] = deque(maxlen=capacity)
        self.dropped = 0

    def record(self, event: UsageEvent) -> None:
        if len(self.events) == self.events.maxlen:
            self.dropped += 1
        self.events.append(event)
