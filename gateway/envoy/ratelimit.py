"""The rate-limit service Envoy asks before a fast-path request leaves (envoy.service.ratelimit.v3).

Envoy's ratelimit filter sends the caller's descriptor (subject, issuer, groups, inferences, bytes,
from the policy filter's metadata); this charges the same token buckets the Python path charges
(``gateway.limits``), in Redis when configured, so a limit holds across every replica and both paths.
Envoy fails open if this service does not answer, as the Python path does when Redis is out.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from gateway.core.identity import Principal
from gateway.envoy.render import decode_name
from gateway.errors import ResourceExhausted
from gateway.limits.limiter import RateLimiter

log = logging.getLogger("gateway.envoy.ratelimit")


def _charge(entries: dict[str, str]) -> tuple[Principal, int, int]:
    groups = entries.get("rl_groups", "-")
    principal = Principal(
        issuer=decode_name(entries.get("issuer", "")),
        subject=decode_name(entries.get("subject", "")),
        groups=frozenset() if groups == "-" else frozenset(decode_name(g) for g in groups.split(" ")),
    )
    inferences = int(entries.get("rl_inferences", "0") or 0)
    nbytes = int(entries.get("rl_bytes", "0") or 0)
    return principal, inferences, nbytes


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def ShouldRateLimit(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        response = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
        for descriptor in request.descriptors:
            entries = {e.key: e.value for e in descriptor.entries}
            try:
                principal, inferences, nbytes = _charge(entries)
                await self.limiter.admit(principal, inferences, nbytes)
            except ResourceExhausted as exc:
                response.overall_code = rls_pb2.RateLimitResponse.OVER_LIMIT
                wait = math.ceil(exc.retry_after_s or 1)
                retry = base_pb2.HeaderValue(key="retry-after", value=str(wait))
                response.response_headers_to_add.append(retry)
                response.raw_body = exc.message.encode()
                return response
            except ValueError:
                log.warning("rate-limit descriptor from Envoy not understood: %s", sorted(entries))
        return response


def register(server: grpc.aio.Server, service: RateLimitService) -> None:
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
