"""Shared state in Redis: every gateway process and replica sees one load view, circuit and bucket set.

Load counters are leases, not INCR/DECR: each process keeps its own counts in memory and publishes
them every ``sync_interval_s`` as one hash with a TTL (``ttl_s``). The others' counts are the sum
over the hashes of processes whose lease is alive, read back in the same script. A process that dies
mid-request stops refreshing, and its counts vanish within ``ttl_s``: nothing leaks.

Staleness: this process's own counts are exact; the others' are at most ``sync_interval_s`` plus one
round trip old (100 ms by default). The routing decision itself never waits on Redis.

Rate buckets are the exception: a limit must hold across processes, so ``take`` runs a Lua script
per limited request (atomic on the Redis server, one round trip).

Redis failing is not the gateway failing: load state fails OPEN (routing on this process's own
counts) and rate limits fall back to per-process buckets. A failure is remembered: for
``backoff_s`` afterwards Redis is not tried at all, so a hung Redis (each try costs ``timeout_s``)
does not slow every rate-limited request; then one operation (usually the background sync) tries
it again while the others still go on locally. One warning per outage, one info when it ends, and
``sonic_gateway_shared_state_errors_total{operation}`` counts every operation that went on locally.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.core.periodic import Periodic
from gateway.observability.registries import once_per_registry
from gateway.state.base import Charge
from gateway.state.memory import InMemoryState

log = logging.getLogger(__name__)

# KEYS: processes zset, this process's load hash, circuits hash.
# ARGV: process id, ttl ms, load-hash prefix, number of load pairs, load pairs, ejection pairs (ms).
# Returns {other processes' counts as flat pairs, live ejections as flat pairs of remaining ms}.
_SYNC = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('DEL', KEYS[2])
local n = tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if n > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl * 10)
while i <= #ARGV do
  local untl = now + tonumber(ARGV[i + 1])
  local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0')
  if untl > cur then redis.call('HSET', KEYS[3], ARGV[i], untl) end
  i = i + 2
end
local totals = {}
for _, p in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if p ~= ARGV[1] then
    local h = redis.call('HGETALL', ARGV[3] .. p)
    for j = 1, #h, 2 do
      totals[h[j]] = (totals[h[j]] or 0) + tonumber(h[j + 1])
    end
  end
end
local load = {}
for k, v in pairs(totals) do
  table.insert(load, k)
  table.insert(load, tostring(v))
end
local circuits = {}
local c = redis.call('HGETALL', KEYS[3])
for j = 1, #c, 2 do
  local left = tonumber(c[j + 1]) - now
  if left > 0 then
    table.insert(circuits, c[j])
    table.insert(circuits, tostring(left))
  else
    redis.call('HDEL', KEYS[3], c[j])
  end
end
if #c > 0 then redis.call('PEXPIRE', KEYS[3], 86400000) end
return {load, circuits}
"""

# KEYS: bucket keys. ARGV: rate, burst, cost per key. Mirrors gateway.state.buckets.take_all.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tokens = {}
local wait = 0
for i = 1, #KEYS do
  local rate, burst, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local v = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tok = burst
  if v[1] then
    tok = math.min(burst, tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * rate)
  end
  tokens[i] = tok
  local need = math.min(cost, burst)
  if tok < need then wait = math.max(wait, (need - tok) / rate) end
end
if wait > 0 then return string.format('%.6f', wait) end
for i = 1, #KEYS do
  local rate, burst, cost = tonumber(ARGV[3*i-2]), tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  local left = tokens[i] - cost
  redis.call('HSET', KEYS[i], 'tokens', string.format('%.6f', left), 'ts', string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], math.ceil((burst - left) / rate * 1000) + 1000)
end
return '0'
"""

@once_per_registry
def state_errors(registry: CollectorRegistry) -> Counter:
    """``sonic_gateway_shared_state_errors_total{operation}``, created once per registry."""
    return Counter(
        "sonic_gateway_shared_state_errors",
        "Shared-state (Redis) operations that failed, or were not tried because Redis failed moments "
        "before; the gateway went on with local state",
        ["operation"],
        registry=registry,
    )


class RedisState:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "{sonic}:",
        sync_interval_s: float = 0.1,
        ttl_s: float = 2.0,
        timeout_s: float = 0.5,
        metrics_registry: CollectorRegistry | None = None,
        backoff_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.sync_interval_s = sync_interval_s
        self.ttl_s = max(ttl_s, 3 * sync_interval_s)
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._clock = clock
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._errors = state_errors(metrics_registry)
        self._local: defaultdict[str, int] = defaultdict(int)
        self._others: dict[str, int] = {}
        self._ejected: dict[str, float] = {}
        self._to_publish: dict[str, float] = {}  # backend -> monotonic until, not yet in Redis
        self._last_sync = 0.0
        self._down = False  # an outage is on: warned once, and only one operation at a time tries
        self._skip_until = 0.0  # clock time before which Redis is not tried
        # Used only while Redis fails: per-process buckets (limits loosen, they do not vanish).
        self._fallback = InMemoryState(clock=clock)
        self._client: aioredis.Redis | None = None
        self._sync_script: Any = None
        self._take_script: Any = None
        self._loop = Periodic(self.sync, sync_interval_s, "shared-state-sync")

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            # One attempt per operation: when to try again is the back-off's decision, not redis-py's.
            retry=Retry(NoBackoff(), 0),
        )
        self._sync_script = self._client.register_script(_SYNC)
        self._take_script = self._client.register_script(_TAKE)
        await self.sync()
        self._loop.start()

    async def close(self) -> None:
        await self._loop.stop()
        if self._client is None:
            return
        try:  # best effort: the TTL removes our counts anyway
            await self._client.zrem(self._key("procs"), self.process_id)
            await self._client.delete(self._key("load", self.process_id))
        except (RedisError, OSError):
            pass
        await self._client.aclose()
        self._client = None

    # -- load --------------------------------------------------------------------------------------
    def acquire(self, backend_id: str) -> None:
        self._local[backend_id] += 1

    def release(self, backend_id: str) -> None:
        self._local[backend_id] -= 1

    def in_flight(self, backend_id: str) -> int:
        return self._local.get(backend_id, 0) + self._others.get(backend_id, 0)

    # -- circuits ----------------------------------------------------------------------------------
    def eject(self, backend_id: str, duration_s: float) -> None:
        until = self._clock() + duration_s
        if until > self._ejected.get(backend_id, 0.0):
            self._ejected[backend_id] = until
            self._to_publish[backend_id] = until

    def ejected_until(self, backend_id: str) -> float:
        return self._ejected.get(backend_id, 0.0)

    # -- sync --------------------------------------------------------------------------------------
    def _skipping(self, operation: str) -> bool:
        """Go on locally without trying Redis (it failed less than ``backoff_s`` ago)?"""
        if self._clock() < self._skip_until:
            self._errors.labels(operation).inc()
            return True
        if self._down:
            # This operation is the one that tries Redis again; the others keep going on locally
            # until it has an answer, so a hung Redis costs one timeout per back-off, not one each.
            self._skip_until = self._clock() + self.backoff_s
        return False

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._errors.labels(operation).inc()
        self._skip_until = self._clock() + self.backoff_s
        if not self._down:
            self._down = True
            log.warning(
                "shared state in Redis failed (%s: %s); going on with this process's own state, "
                "trying Redis again every %.1f s",
                operation,
                exc,
                self.backoff_s,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            self._skip_until = 0.0
            log.info("shared state in Redis works again")

    async def sync(self) -> None:
        """Publish this process's counts and ejections; read the others'. Never raises."""
        if self._client is None:
            return
        now = self._clock()
        if self._skipping("sync"):
            self._drop_stale(now)
            return
        load = [(b, n) for b, n in self._local.items() if n]
        ejections = [(b, u - now) for b, u in self._to_publish.items() if u > now]
        args: list[str | int] = [
            self.process_id,
            int(self.ttl_s * 1000),
            self._key("load", ""),
            len(load),
        ]
        for backend_id, count in load:
            args += [backend_id, count]
        for backend_id, left in ejections:
            args += [backend_id, max(1, int(left * 1000))]
        keys = [self._key("procs"), self._key("load", self.process_id), self._key("circuit")]
        try:
            others, circuits = await self._sync_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._failed("sync", exc)
            self._drop_stale(now)
            return
        self._recovered()
        self._to_publish.clear()
        self._last_sync = now
        self._others = {
            others[i].decode(): int(float(others[i + 1])) for i in range(0, len(others), 2)
        }
        for i in range(0, len(circuits), 2):
            backend_id = circuits[i].decode()
            until = now + float(circuits[i + 1]) / 1000.0
            if until > self._ejected.get(backend_id, 0.0):
                self._ejected[backend_id] = until

    def _drop_stale(self, now: float) -> None:
        # Fail open: the others' counts we can no longer refresh are dropped, not trusted forever.
        if now - self._last_sync > self.ttl_s:
            self._others = {}

    # -- rate limits -------------------------------------------------------------------------------
    async def take(self, charges: Sequence[Charge]) -> float:
        if not charges:
            return 0.0
        if self._client is None or self._skipping("rate_limit"):
            return await self._fallback.take(charges)
        args: list[float] = []
        for charge in charges:
            args += [charge.rate, charge.burst, charge.cost]
        try:
            wait = await self._take_script(keys=[self._key("bucket", c.key) for c in charges], args=args)
        except (RedisError, OSError) as exc:
            self._failed("rate_limit", exc)
            return await self._fallback.take(charges)
        self._recovered()
        return float(wait)
