"""The queue each backend reports itself: Triton's ``nv_inference_pending_request_count``, scraped.

Requests from clients that bypass the gateway (a facility's local users, another gateway) wait in
Triton's queue too; only the backend can tell. Each backend's metrics endpoint (``metrics_address``)
is scraped every ``interval_s``. Fail open: a backend whose metrics cannot be read counts as having
no queue (its in-flight count from the gateways still steers routing), and a reading older than
three intervals is dropped rather than trusted.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

import httpx

from gateway.core.periodic import Periodic, Sleep
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)

PENDING_METRIC = "nv_inference_pending_request_count"
_LINE = re.compile(rf"^{PENDING_METRIC}\{{(?P<labels>[^}}]*)\}}\s+(?P<value>\S+)", re.MULTILINE)
_MODEL_LABEL = re.compile(r'(?:^|,)\s*model="(?P<model>[^"]*)"')


def parse_pending(text: str) -> dict[str, int]:
    """Pending requests per model (summed over versions) from Prometheus exposition text."""
    out: dict[str, int] = {}
    for match in _LINE.finditer(text):
        model = _MODEL_LABEL.search(match.group("labels"))
        if model is None:
            continue
        try:
            value = int(float(match.group("value")))
        except ValueError:
            continue
        out[model.group("model")] = out.get(model.group("model"), 0) + max(0, value)
    return out


class BackendQueues:
    def __init__(
        self,
        registry: Registry,
        interval_s: float = 1.0,
        timeout_s: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.registry = registry
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._pending: dict[str, tuple[float, dict[str, int]]] = {}
        self._failing: set[str] = set()
        self._client: httpx.AsyncClient | None = None
        self._loop = Periodic(self.scrape_all, interval_s, "queue-scraper", sleep=sleep)

    def pending_by_model(self, backend_id: str) -> dict[str, int]:
        entry = self._pending.get(backend_id)
        if entry is None or self._clock() - entry[0] > 3 * self.interval_s:
            return {}
        return entry[1]

    def pending(self, backend_id: str) -> int:
        """Requests queued at the backend, all models together (they share its devices)."""
        return sum(self.pending_by_model(backend_id).values())

    async def scrape(self, backend: Backend) -> None:
        if backend.metrics_address is None or self._client is None:
            return
        try:
            response = await self._client.get(
                f"http://{backend.metrics_address}/metrics", timeout=self.timeout_s
            )
            response.raise_for_status()
            pending = parse_pending(response.text)
        except httpx.HTTPError as exc:
            self._pending.pop(backend.id, None)  # fail open: no queue known
            if backend.id not in self._failing:
                self._failing.add(backend.id)
                log.info(
                    "cannot read the queue of backend %s (%s); routing on in-flight counts", backend.id, exc
                )
            return
        self._failing.discard(backend.id)
        self._pending[backend.id] = (self._clock(), pending)

    async def scrape_all(self) -> None:
        backends = [b for b in self.registry.snapshot.backends.values() if b.metrics_address]
        await asyncio.gather(*(self.scrape(b) for b in backends))

    async def start(self) -> None:
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        await self.scrape_all()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
