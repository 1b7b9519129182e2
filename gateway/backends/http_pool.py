"""HTTP connections to backends: ONE pooled ``httpx.AsyncClient`` per gateway; raw bytes in and out.

This is the edge where httpx's errors become gateway errors (``raise ... from exc``), as
``grpc_pool`` does for grpc: a request that never reached the backend (connect refused or timed out)
becomes :class:`BackendUnreachable` (the core retries it once elsewhere), a backend that took too
long becomes :class:`DeadlineExceeded`, any other transport failure :class:`Unavailable`. Answers the
backend did give, 4xx/5xx included, are returned as they are: status, headers and undecoded body
(a gzip answer stays gzip for the client to decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from gateway.auth.outbound import BackendCredentials
from gateway.errors import BackendUnreachable, DeadlineExceeded, Unavailable
from gateway.routing.backend import Backend

# Connecting is quick on a healthy network; a backend that cannot be reached in this time is treated
# as unreachable (and the request retried elsewhere) rather than waited for.
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class BackendResponse:
    status: int
    headers: httpx.Headers
    body: bytes


def translate_http_error(exc: httpx.TransportError, backend: Backend) -> Exception:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = str(exc) or type(exc).__name__
        return BackendUnreachable(f"backend {backend.id} is unreachable over HTTP: {reason}")
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return DeadlineExceeded(f"backend {backend.id} did not answer within the deadline")
    return Unavailable(f"backend {backend.id} failed over HTTP ({type(exc).__name__}): {exc}; retry later")


class HttpBackendPool:
    """The shared client; :meth:`start` opens it, :meth:`close` closes it (owned by the Gateway)."""

    def __init__(
        self,
        credentials: BackendCredentials | None = None,
        max_connections: int = 200,
        max_keepalive: int = 50,
    ) -> None:
        self.credentials = credentials or BackendCredentials()
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_keepalive, keepalive_expiry=30
        )
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=self._limits,
                trust_env=False,  # loopback and facility addresses: never through an env proxy
                follow_redirects=False,
                timeout=httpx.Timeout(60.0, connect=CONNECT_TIMEOUT_S),
            )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise Unavailable("the gateway is not started (no HTTP client to reach backends)")
        return self._client

    async def request(
        self,
        backend: Backend,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Sequence[tuple[str, str]] = (),
        timeout: float | None = None,
        client_authorization: str | None = None,
    ) -> BackendResponse:
        """Send to ``backend``; a facility that requires its own credential gets it (never the client's
        token, unless that facility is configured with ``forward_client_token``)."""
        if not backend.http_address:
            raise Unavailable(f"backend {backend.id} has no HTTP address")
        url = f"http://{backend.http_address}{path}"
        out = httpx.Headers(list(headers))
        # httpx would otherwise ask for (and silently decode) compression the client never asked for.
        if "accept-encoding" not in out:
            out["accept-encoding"] = "identity"
        credential = await self.credentials.authorization_for(backend.id, client_authorization)
        if credential is not None:
            out["authorization"] = credential
        request_timeout = (
            httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT_S, timeout)) if timeout is not None else None
        )
        client = self.client
        try:
            request = client.build_request(
                method, url, content=content, headers=out, timeout=request_timeout or client.timeout
            )
            response = await client.send(request, stream=True)
            try:
                # aiter_raw: the bytes on the wire, NOT decoded (Content-Encoding is passed through).
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise translate_http_error(exc, backend) from exc
        return BackendResponse(response.status_code, response.headers, body)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
