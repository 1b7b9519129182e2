"""Bearer tokens: WLCG discovery, file re-reading and OAuth2 refresh.

Discovery follows the WLCG Bearer Token Discovery rules, in order:

1. ``BEARER_TOKEN`` environment variable (the token itself);
2. ``BEARER_TOKEN_FILE`` environment variable (a file holding the token);
3. ``$XDG_RUNTIME_DIR/bt_u$UID``;
4. ``/tmp/bt_u$UID``.

A place that is unset, missing, unreadable or empty is skipped and the next one tried; when none
yields a token, :class:`TokenNotFoundError` names every place tried. Files are re-read whenever
they change (a grid job's token agent rewrites them), and discovery runs again on every call, so a
token that appears later is picked up without restarting the job.

Providers may also have ``invalidate()``: forget what is cached because the gateway rejected the
token. The client calls it on a 401 / UNAUTHENTICATED (then re-reads the source once and retries
once) and before refusing a token that has already expired.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ._errors import TokenExpiredError, TokenNotFoundError, TokenRefreshError
from ._optional import require

__all__ = [
    "DiscoveredToken",
    "FileToken",
    "OAuth2TokenProvider",
    "StaticToken",
    "TokenProvider",
    "discover_token",
    "token_expiry",
]


@runtime_checkable
class TokenProvider(Protocol):
    """Anything that returns the current bearer token (without the ``Bearer`` prefix).

    Optional extras the client uses when present: a ``source`` attribute (where the token came
    from, for error messages) and an ``invalidate()`` method (drop any cached token: the next
    :meth:`get_token` must read the source again).
    """

    def get_token(self) -> str: ...


class StaticToken:
    """A token given as a string."""

    def __init__(self, token: str, source: str = "explicit token") -> None:
        token = token.strip()
        if not token:
            raise ValueError("empty bearer token")
        self._token = token
        self.source = source

    def get_token(self) -> str:
        return self._token

    def __repr__(self) -> str:  # never show the token itself
        return f"StaticToken(source={self.source!r})"


class FileToken:
    """A token kept in a file, re-read whenever the file changes (mtime, size or inode)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.source = str(self.path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None

    def read(self) -> str | None:
        """The token in the file, or None when the file is missing, unreadable or empty."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                try:
                    text = self.path.read_text(encoding="utf-8").strip()
                except (OSError, UnicodeDecodeError):
                    return None
                self._stamp, self._token = stamp, (text or None)
            return self._token

    def get_token(self) -> str:
        token = self.read()
        if token is None:
            raise TokenNotFoundError([f"file {self.path} (missing, unreadable or empty)"])
        return token

    def invalidate(self) -> None:
        """Read the file again next time even if its mtime, size and inode look unchanged (a
        renewed token of the same length written within the file system's mtime resolution)."""
        with self._lock:
            self._stamp = None

    def __repr__(self) -> str:
        return f"FileToken({str(self.path)!r})"


def _current_uid() -> int:
    getuid = getattr(os, "geteuid", None)
    return int(getuid()) if getuid is not None else 0


class DiscoveredToken:
    """WLCG Bearer Token Discovery, run again on every :meth:`get_token` call.

    Environment lookups and a ``stat`` per call are cheap; files are only re-read when they change.
    ``environ`` and ``uid`` exist for tests; by default the process environment and effective uid.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, uid: int | None = None) -> None:
        self._environ = environ
        self._uid = uid
        self._files: dict[str, FileToken] = {}
        self._lock = threading.Lock()
        self.source: str | None = None

    def _file(self, path: str) -> FileToken:
        with self._lock:
            ft = self._files.get(path)
            if ft is None:
                ft = self._files[path] = FileToken(path)
            return ft

    def get_token(self) -> str:
        environ = os.environ if self._environ is None else self._environ
        uid = _current_uid() if self._uid is None else self._uid
        tried: list[str] = []
        value = environ.get("BEARER_TOKEN")
        if value is not None and value.strip():
            self.source = "environment variable BEARER_TOKEN"
            return value.strip()
        tried.append(f"environment variable BEARER_TOKEN ({'empty' if value is not None else 'unset'})")
        paths: list[tuple[str, str | None]] = [
            ("BEARER_TOKEN_FILE", environ.get("BEARER_TOKEN_FILE") or None),
            (f"$XDG_RUNTIME_DIR/bt_u{uid}",
             f"{environ['XDG_RUNTIME_DIR']}/bt_u{uid}" if environ.get("XDG_RUNTIME_DIR") else None),
            (f"/tmp/bt_u{uid}", f"/tmp/bt_u{uid}"),  # noqa: S108 (the WLCG-specified path)
        ]
        for name, path in paths:
            if path is None:
                unset = "BEARER_TOKEN_FILE" if name == "BEARER_TOKEN_FILE" else "XDG_RUNTIME_DIR"
                tried.append(f"{name} ({unset} unset)")
                continue
            token = self._file(path).read()
            if token is not None:
                self.source = f"file {path}"
                return token
            label = path if name == path else f"{name} = {path}"
            tried.append(f"file {label} (missing, unreadable or empty)")
        raise TokenNotFoundError(tried)

    def invalidate(self) -> None:
        """Read every token file again on the next call (see :meth:`FileToken.invalidate`)."""
        with self._lock:
            files = list(self._files.values())
        for ft in files:
            ft.invalidate()

    def __repr__(self) -> str:
        return f"DiscoveredToken(source={self.source!r})"


def discover_token(environ: Mapping[str, str] | None = None, uid: int | None = None) -> str:
    """Return the token found by WLCG discovery now, or raise :class:`TokenNotFoundError`."""
    return DiscoveredToken(environ, uid).get_token()


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix time) of a JWT, read without verifying it; None if not a JWT.

    Only used to decide when to refresh: the gateway verifies the token, the client never trusts it.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


#: token_expiry for the per-request expiry check: a client sends the same token for minutes, so
#: its claims are decoded once, not on every request (base64 + JSON of a ~1 kB JWT, ~20 us).
_cached_expiry = functools.lru_cache(maxsize=8)(token_expiry)


def _oauth2_client_class() -> Any:
    # Authlib >= 1.7 prefers the `httpx2` package and warns (AuthlibDeprecationWarning) when it falls
    # back to `httpx`. httpx is what we depend on and what respx mocks, so silence exactly that one
    # warning around the import.
    import authlib.deprecate

    with warnings.catch_warnings():
        category = getattr(authlib.deprecate, "AuthlibDeprecationWarning", DeprecationWarning)
        warnings.filterwarnings("ignore", category=category)
        from authlib.integrations.httpx_client import OAuth2Client

    return OAuth2Client


def _require_oidc() -> None:
    feature = "OAuth2 token refresh (OAuth2TokenProvider)"
    require("authlib", "oidc", feature)
    require("httpx", "oidc", feature)


class OAuth2TokenProvider:
    """Fresh access tokens from an OAuth2 token endpoint (authlib's httpx client).

    Uses the refresh-token grant when ``refresh_token`` is given (rotated refresh tokens are kept),
    the client-credentials grant otherwise. With ``source`` (e.g. :class:`DiscoveredToken`), the
    source's token is used as long as it has more than ``min_lifetime`` seconds left (or its expiry
    cannot be read); only a token about to expire, or a missing one, triggers the grant.

    Needs the ``oidc`` extra (authlib, httpx): ``pip install 'sonic-client[oidc]'``.
    """

    def __init__(
        self,
        token_endpoint: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        refresh_token: str | None = None,
        scope: str | None = None,
        audience: str | None = None,
        source: TokenProvider | None = None,
        min_lifetime: float = 60.0,
        timeout: float = 10.0,
    ) -> None:
        self.token_endpoint = token_endpoint
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._scope = scope
        self._audience = audience
        self._source = source
        self._min_lifetime = min_lifetime
        self._timeout = timeout
        self._lock = threading.Lock()
        self._access: str | None = None
        self._expires_at: float | None = None
        self.source = f"OAuth2 {'refresh-token' if refresh_token else 'client-credentials'} grant"
        self._rejected: str | None = None  # a source token the gateway refused: use the grant
        self._last: str | None = None
        _require_oidc()  # fail here, when the job starts, not at the first refresh hours later

    def _fresh_enough(self, expires_at: float | None) -> bool:
        return expires_at is None or expires_at - time.time() > self._min_lifetime

    def get_token(self) -> str:
        if self._source is not None:
            try:
                token = self._source.get_token()
            except TokenNotFoundError:
                token = None
            if (token is not None and token != self._rejected
                    and self._fresh_enough(token_expiry(token))):
                self._last = token
                return token
        with self._lock:
            if self._access is None or not self._fresh_enough(self._expires_at):
                self._access, self._expires_at = self._fetch()
            self._last = self._access
            return self._access

    def invalidate(self) -> None:
        """The gateway rejected the last token: re-read the source, and if it still holds that
        token, run the grant instead of sending it again."""
        with self._lock:
            if self._last is not None and self._last == self._access:
                self._access = None
            else:
                self._rejected = self._last
        if self._source is not None:
            invalidate(self._source)

    def _fetch(self) -> tuple[str, float | None]:
        cls = _oauth2_client_class()
        extra: dict[str, str] = {}
        if self._audience:
            extra["audience"] = self._audience
        try:
            with cls(client_id=self._client_id, client_secret=self._client_secret,
                     scope=self._scope, token_endpoint=self.token_endpoint,
                     timeout=self._timeout) as session:
                if self._refresh_token:
                    tok = session.refresh_token(self.token_endpoint, refresh_token=self._refresh_token,
                                                **extra)
                else:
                    tok = session.fetch_token(self.token_endpoint, grant_type="client_credentials",
                                              **extra)
        except Exception as exc:
            # Never include the response body: it may echo credentials.
            raise TokenRefreshError(
                f"OAuth2 token request to {self.token_endpoint} failed: {type(exc).__name__}: {exc}"
            ) from None
        access = tok.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenRefreshError(f"token endpoint {self.token_endpoint} returned no access_token")
        new_refresh = tok.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:
            self._refresh_token = new_refresh
        expires_at = tok.get("expires_at")
        exp = float(expires_at) if isinstance(expires_at, int | float) else token_expiry(access)
        return access, exp

    def __repr__(self) -> str:
        return f"OAuth2TokenProvider(token_endpoint={self.token_endpoint!r})"


def invalidate(provider: TokenProvider) -> None:
    """Call the provider's ``invalidate()`` when it has one."""
    hook = getattr(provider, "invalidate", None)
    if callable(hook):
        hook()


def token_source(provider: TokenProvider) -> str | None:
    """Where the provider's token comes from (its ``source`` attribute), for messages."""
    source = getattr(provider, "source", None)
    return source if isinstance(source, str) else None


def unexpired_token(provider: TokenProvider, now: float) -> str:
    """The provider's token, refusing one whose ``exp`` is at or before ``now`` (Unix time).

    An expired token makes the provider re-read its source once (the agent may have renewed the
    file); if that gives an expired token too, :class:`TokenExpiredError` says so, naming the
    source, never the token. Tokens whose expiry cannot be read (opaque) are sent as they are.
    """
    token = provider.get_token()
    exp = _cached_expiry(token)
    if exp is None or exp > now:
        return token
    invalidate(provider)
    token = provider.get_token()
    exp = _cached_expiry(token)
    if exp is not None and exp <= now:
        raise TokenExpiredError(token_source(provider), exp, now)
    return token


def as_provider(token: str | TokenProvider | None) -> TokenProvider:
    """Normalise the ``token=`` argument: a string, a provider, or None for WLCG discovery."""
    if token is None:
        return DiscoveredToken()
    if isinstance(token, str):
        return StaticToken(token)
    return token
