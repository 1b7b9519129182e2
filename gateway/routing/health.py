"""Active health checks: ServerReady, the models each backend lists, and ModelReady for each of them.

Fail-closed for routing: a backend that does not answer a probe gets no traffic until it does. A
backend that keeps failing is probed less often (the interval doubles per failure, up to
``max_backoff_s``), so dead facilities do not cost a probe storm; one good answer resets it. The cap
is short (4 s by default) because it bounds re-admission: a backend that comes back is probed, and
routed to, within about ``max_backoff_s`` of being ready. The back-off counts from the start of
the failed probe, so a probe that hangs until its timeout does not stretch it.

Logs say why: the first failed probe after a good one (or the first probe of all) is a WARNING
naming the cause, a hung backend's with the timeout it ran past. The monitor keeps its own verdict
for this, because the data path may have taken the backend out already (a refused connection) and
that alone logs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.core.periodic import Periodic, Sleep
from gateway.errors import BackendError, DeadlineExceeded, GatewayError
from gateway.routing.backend import Backend
from gateway.routing.registry import Registry

log = logging.getLogger(__name__)

# The longest pause between probes of a failing backend, and so about the longest a backend that
# has come back waits to be routed to again (the same default as routing.health_max_backoff_s).
DEFAULT_MAX_BACKOFF_S = 4.0


class Prober(Protocol):
    """ServerReady and the listed models; a prober that also has ``model_ready(backend, model,
    version, timeout)`` (``gateway.routing.probes.GrpcProber``) gets each listed version checked."""

    async def server_ready(self, backend: Backend, timeout: float) -> bool: ...

    async def ready_models(self, backend: Backend, timeout: float) -> dict[str, frozenset[str]]: ...


class HealthMonitor:
    def __init__(
        self,
        registry: Registry,
        prober: Prober,
        interval_s: float,
        timeout_s: float,
        max_backoff_s: float | None = None,
        on_healthy: Callable[[str], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.registry = registry
        self.prober = prober
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        cap = max_backoff_s if max_backoff_s is not None else DEFAULT_MAX_BACKOFF_S
        self.max_backoff_s = max(interval_s, cap)
        self.on_healthy = on_healthy
        self._clock = clock
        self._failures: dict[str, int] = {}
        self._next_probe: dict[str, float] = {}
        self._loop = Periodic(self.probe_all, interval_s, "health-monitor", sleep=sleep)

    async def _models(self, backend: Backend) -> dict[str, frozenset[str]]:
        listed = await self.prober.ready_models(backend, self.timeout_s)
        model_ready = getattr(self.prober, "model_ready", None)
        if model_ready is None:
            return listed
        pairs = [(name, version) for name, versions in listed.items() for version in versions]
        answers = await asyncio.gather(
            *(model_ready(backend, name, version, self.timeout_s) for name, version in pairs),
            return_exceptions=True,
        )
        ready: dict[str, set[str]] = {}
        for (name, version), answer in zip(pairs, answers, strict=True):
            # A server without ModelReady (not Triton, but KServe-like) is trusted on its index.
            unimplemented = isinstance(answer, BackendError) and answer.grpc_code == "UNIMPLEMENTED"
            if answer is True or unimplemented:
                ready.setdefault(name, set()).add(version)
            elif isinstance(answer, BaseException) and not isinstance(answer, GatewayError | TimeoutError):
                raise answer
        return {name: frozenset(v) for name, v in ready.items()}

    async def probe(self, backend: Backend) -> None:
        started = self._clock()
        step, limit = "ServerReady", self.timeout_s
        try:
            ready = await asyncio.wait_for(self.prober.server_ready(backend, self.timeout_s), self.timeout_s)
            step, limit = "the model index and ModelReady", 2 * self.timeout_s
            models = await asyncio.wait_for(self._models(backend), limit) if ready else None
        except (GatewayError, TimeoutError) as exc:
            self._backoff(backend.id, started)
            reason = self._reason(exc, step, limit)
            self._failed(backend, reason)
            self.registry.update_health(backend.id, False, None, reason)
            return
        was = self.registry.snapshot.health.get(backend.id)
        if was is not None and not was.healthy and ready:
            log.info("backend %s is healthy, serving %s", backend.id, ", ".join(sorted(models or {})))
        if ready:
            self._failures.pop(backend.id, None)
            self._next_probe.pop(backend.id, None)
            if self.on_healthy is not None:
                self.on_healthy(backend.id)
        else:
            self._backoff(backend.id, started)
            self._failed(backend, "server not ready (ServerReady answered false)")
        self.registry.update_health(backend.id, ready, models, "" if ready else "server not ready")

    def _reason(self, exc: BaseException, step: str, limit: float) -> str:
        """Why a probe failed; a hung backend's reason names the timeout it ran past."""
        message = str(exc) if isinstance(exc, TimeoutError) else getattr(exc, "message", str(exc))
        if isinstance(exc, DeadlineExceeded) or "timed out" in message.lower():
            limit = self.timeout_s  # the call's own deadline ran out, not the step's bound
        elif not isinstance(exc, TimeoutError):
            return message or type(exc).__name__
        hung = f"no answer to {step} within the probe timeout of {limit:g} s (routing.probe_timeout_s)"
        return f"{hung}: {message}" if message else hung

    def _failed(self, backend: Backend, reason: str) -> None:
        """WARNING once per outage: on the first failure after a pass (or of the first probe), i.e.
        the one that started the backoff (``_backoff`` runs first; a pass clears the count)."""
        if self._failures.get(backend.id) == 1:
            log.warning(
                "backend %s failed its health check and gets no traffic until it passes one: %s",
                backend.id,
                reason,
            )

    def _backoff(self, backend_id: str, started: float) -> None:
        failures = self._failures.get(backend_id, 0) + 1
        self._failures[backend_id] = failures
        delay = min(self.max_backoff_s, self.interval_s * 2 ** min(failures, 30))
        # Less half an interval: the probe lands on the round due at ``started + delay``.
        self._next_probe[backend_id] = started + delay - self.interval_s / 2

    def next_probe_in(self, backend_id: str) -> float:
        """Seconds until ``backend_id`` is probed again (0: at the next round)."""
        return max(0.0, self._next_probe.get(backend_id, 0.0) - self._clock())

    async def probe_all(self) -> None:
        now = self._clock()
        backends = [
            b for b in self.registry.snapshot.backends.values() if self._next_probe.get(b.id, 0.0) <= now
        ]
        await asyncio.gather(*(self.probe(b) for b in backends))

    async def start(self) -> None:
        await self.probe_all()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
