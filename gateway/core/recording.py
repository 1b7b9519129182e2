"""Usage/provenance events: which model version served which job, recorded off the hot path.

The data path only appends to a recorder; a real recorder (the catalog's batched database writer)
flushes in the background. The in-memory recorder is the embedded default and the test double.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol


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
