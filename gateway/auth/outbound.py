"""Credentials the gateway presents to a facility's Triton servers.

Kinds: ``none``; ``file`` (a static bearer token read from a file, re-read when the file changes);
``client_credentials`` (OAuth2 client-credentials grant at the facility's token endpoint, request
built and answer parsed with authlib, cached until ``refresh_margin_s`` before expiry);
``forward_client_token`` (the client's own ``authorization`` value, only for facilities configured
so). The client's token is never sent anywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
from authlib.oauth2.auth import ClientAuth
from authlib.oauth2.rfc6749.parameters import prepare_token_request

from gateway.auth.safelog import safe
from gateway.config import OutboundCredentialSettings
from gateway.errors import Unavailable

log = logging.getLogger("gateway.auth.outbound")

MAX_TOKEN_FILE_BYTES = 64 * 1024


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise Unavailable(f"the gateway cannot read its {what} for this facility ({exc.strerror})") from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise Unavailable(f"the gateway's {what} file for this facility is too large")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Unavailable(f"the gateway's {what} file for this facility is not UTF-8") from None
    if not text or any(c.isspace() for c in text):
        raise Unavailable(f"the gateway's {what} file for this facility is empty or holds several words")
    return text


class OutboundCredentials:
    """``await authorization_for(client_authorization)`` -> the header value to send, or None."""

    def __init__(
        self,
        settings: OutboundCredentialSettings,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._owned = http_client is None and settings.kind == "client_credentials"
        self._client = http_client
        if self._owned:
            self._client = httpx.AsyncClient(verify=True, follow_redirects=False, trust_env=False)
        self._lock = asyncio.Lock()
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_value: str | None = None
        self._token: str | None = None
        self._token_refresh_at = 0.0

    async def authorization_for(self, client_authorization: str | None) -> str | None:
        kind = self.settings.kind
        if kind == "none":
            return None
        if kind == "forward_client_token":
            return client_authorization
        if kind == "file":
            return f"Bearer {self._from_file()}"
        return f"Bearer {await self._client_credentials()}"

    def _from_file(self) -> str:
        path = self.settings.token_file
        assert path is not None
        try:
            info = os.stat(path)
        except OSError as exc:
            raise Unavailable(
                f"the gateway cannot read its token file for this facility ({exc.strerror})"
            ) from None
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if stamp != self._file_stamp or self._file_value is None:
            self._file_value = _read_secret(path, "token")
            self._file_stamp = stamp
        return self._file_value

    async def _client_credentials(self) -> str:
        if self._token is not None and self._clock() < self._token_refresh_at:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._token_refresh_at:
                return self._token
            self._token, self._token_refresh_at = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> tuple[str, float]:
        s = self.settings
        assert s.token_url is not None
        assert s.client_secret_file is not None
        assert self._client is not None
        secret = _read_secret(s.client_secret_file, "client secret")
        extra: dict[str, Any] = {}
        if s.scope:
            extra["scope"] = s.scope
        if s.audience:
            extra["audience"] = s.audience
        body = prepare_token_request("client_credentials", **extra)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        url, headers, body = ClientAuth(s.client_id, secret, s.auth_method).prepare(
            "POST", s.token_url, headers, body
        )
        try:
            response = await asyncio.wait_for(
                self._client.post(url, content=body, headers=headers, timeout=s.timeout_s), s.timeout_s
            )
        except (TimeoutError, httpx.HTTPError) as exc:
            log.warning("token endpoint %s failed: %s", safe(s.token_url, 200), type(exc).__name__)
            raise Unavailable("the gateway could not obtain a credential for this facility") from None
        if response.status_code != 200 or len(response.content) > MAX_TOKEN_FILE_BYTES:
            log.warning("token endpoint %s answered HTTP %d", safe(s.token_url, 200), response.status_code)
            raise Unavailable("the gateway could not obtain a credential for this facility")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            log.warning("token endpoint %s sent no usable access_token", safe(s.token_url, 200))
            raise Unavailable("the gateway could not obtain a credential for this facility")
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
        now = self._clock()
        return token, now + max(lifetime - s.refresh_margin_s, min(lifetime / 2, 30.0))

    async def aclose(self) -> None:
        if self._owned and self._client is not None:
            await self._client.aclose()


__all__ = ["OutboundCredentialSettings", "OutboundCredentials"]


class BackendCredentials:
    """The outbound credential of each backend that needs one, keyed by backend id.

    The client's own token goes to a facility only when that facility is configured with
    ``forward_client_token``; by default nothing is sent.
    """

    def __init__(self, providers: dict[str, OutboundCredentials] | None = None) -> None:
        self.providers = providers or {}

    async def authorization_for(self, backend_id: str, client_authorization: str | None) -> str | None:
        provider = self.providers.get(backend_id)
        if provider is None:
            return None
        return await provider.authorization_for(client_authorization)

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
