"""Issuer signing keys: fetched (discovery + JWKS over HTTPS, or a local file), cached, rotated.

Each trusted issuer has one :class:`IssuerKeys`. Keys are looked up by ``kid`` and kept for
``jwks_refresh_s`` (at least an hour); after that a background refresh runs while the cached keys
keep serving. An unknown ``kid`` triggers an inline refresh, but at most one fetch per issuer per
``jwks_unknown_kid_interval_s`` (failed fetches count too), so a flood of made-up kids is not a flood
of requests. When the issuer is unreachable the last good key set serves until ``jwks_max_stale_s``
after it was fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from gateway.auth.errors import TokenRejected
from gateway.auth.jose import loads_strict
from gateway.auth.safelog import safe
from gateway.config import IssuerSettings, check_fetch_url
from gateway.errors import Unavailable

log = logging.getLogger("gateway.auth.keys")

MAX_KEYS_PER_SET = 100
MAX_KID_LENGTH = 256
MIN_RSA_BITS = 2048

# alg -> (kty, crv or None); the key must match both.
_ALG_KEY_TYPE: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
_PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y"), "OKP": ("kty", "crv", "x")}
_EC_CURVE_NAMES = {"P-256": "secp256r1", "P-384": "secp384r1", "P-521": "secp521r1"}


class FetchError(Exception):
    """Discovery or key set could not be fetched or used; the message is safe to log."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    key: Any  # a cryptography public key object

    def mismatch(self, alg: str) -> str | None:
        """Why this key may not verify a token signed with ``alg`` (None: it may)."""
        wanted = _ALG_KEY_TYPE.get(alg)
        if wanted is None:
            return f"algorithm {alg} is not supported"
        kty, crv = wanted
        if self.kty != kty or (crv is not None and self.crv != crv):
            shape = f"{self.kty}/{self.crv}" if self.crv else self.kty
            return f"key {safe(self.kid)} is {shape}, not usable with {alg}"
        if self.alg is not None and self.alg != alg:
            return f"key {safe(self.kid)} is declared for {self.alg}, not {alg}"
        return None


def parse_jwk(jwk: Any) -> VerificationKey:
    """One JWK -> public key; raises ValueError (with a loggable message) when unusable."""
    if not isinstance(jwk, dict):
        raise ValueError("not a JSON object")
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise ValueError("missing or invalid kid")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError(f"key {safe(kid)} is for use {safe(str(use))}, not sig")
    alg = jwk.get("alg")
    if alg is not None and (not isinstance(alg, str) or alg not in _ALG_KEY_TYPE):
        raise ValueError(f"key {safe(kid)} declares an algorithm that is not accepted")
    kty = jwk.get("kty")
    if not isinstance(kty, str) or kty not in _PUBLIC_MEMBERS:
        raise ValueError(f"key {safe(kid)} has unsupported kty")
    # Only public members: a JWKS that (wrongly) carries private parts must not yield private keys.
    public = {name: jwk[name] for name in _PUBLIC_MEMBERS[kty] if name in jwk}
    crv = public.get("crv")
    try:
        if kty == "RSA":
            key: Any = RSAAlgorithm.from_jwk(public)
            if key.key_size < MIN_RSA_BITS:
                raise ValueError(f"RSA key {safe(kid)} has {key.key_size} bits, fewer than {MIN_RSA_BITS}")
        elif kty == "EC":
            if crv not in _EC_CURVE_NAMES:
                raise ValueError(f"EC key {safe(kid)} uses an unsupported curve")
            key = ECAlgorithm.from_jwk(public)
            if key.curve.name != _EC_CURVE_NAMES[crv]:
                raise ValueError(f"EC key {safe(kid)} does not lie on its declared curve")
        else:
            if crv != "Ed25519":
                raise ValueError(f"OKP key {safe(kid)} uses an unsupported curve")
            key = OKPAlgorithm.from_jwk(public)
    except ValueError:
        raise
    except Exception as exc:  # pyjwt/cryptography raise many kinds on bad key material
        raise ValueError(f"key {safe(kid)} could not be loaded ({type(exc).__name__})") from None
    return VerificationKey(kid=kid, kty=kty, crv=crv if isinstance(crv, str) else None, alg=alg, key=key)


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """A JWK Set -> {kid: key}; unusable keys are skipped (and logged); none usable is an error."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise FetchError("the JWKS is not an object with a 'keys' list")
    entries = document["keys"]
    if len(entries) > MAX_KEYS_PER_SET:
        raise FetchError(f"the JWKS has {len(entries)} keys, more than {MAX_KEYS_PER_SET}")
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        try:
            key = parse_jwk(entry)
        except ValueError as exc:
            log.info("skipping a JWKS entry: %s", exc)
            continue
        if key.kid in keys:
            log.warning("JWKS lists kid %s twice; keeping the first", safe(key.kid))
            continue
        keys[key.kid] = key
    if not keys:
        raise FetchError("the JWKS holds no usable signing key")
    return keys


async def fetch_json(client: httpx.AsyncClient, url: str, *, timeout_s: float, max_bytes: int) -> Any:
    """GET a JSON document with a total deadline and a size cap; no redirects."""

    async def get() -> bytes:
        async with client.stream(
            "GET", url, headers={"Accept": "application/json"}, follow_redirects=False, timeout=timeout_s
        ) as response:
            if response.status_code != 200:
                raise FetchError(f"{safe(url, 200)} answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{safe(url, 200)} sent more than {max_bytes} bytes")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError(f"{safe(url, 200)} sent more than {max_bytes} bytes")
            return bytes(body)

    try:
        raw = await asyncio.wait_for(get(), timeout_s)
    except TimeoutError:
        raise FetchError(f"{safe(url, 200)} did not answer within {timeout_s} s") from None
    except httpx.HTTPError as exc:
        raise FetchError(f"{safe(url, 200)} could not be fetched ({type(exc).__name__})") from None
    try:
        return loads_strict(raw, "document", max_depth=16)
    except TokenRejected:
        raise FetchError(f"{safe(url, 200)} did not return valid JSON") from None


class HttpKeyFetcher:
    """Discovery (unless ``jwks_uri`` is configured) then the JWKS, for one issuer."""

    def __init__(
        self, issuer: IssuerSettings, client: httpx.AsyncClient, *, timeout_s: float, max_bytes: int
    ) -> None:
        self._issuer = issuer
        self._client = client
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes

    async def discover(self) -> str:
        url = self._issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document = await fetch_json(self._client, url, timeout_s=self._timeout_s, max_bytes=self._max_bytes)
        if not isinstance(document, dict):
            raise FetchError("the discovery document is not a JSON object")
        if document.get("issuer") != self._issuer.issuer:
            raise FetchError(
                f"the discovery document names issuer {safe(str(document.get('issuer')))}, "
                f"not {safe(self._issuer.issuer)}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise FetchError("the discovery document has no jwks_uri")
        try:
            return check_fetch_url(jwks_uri, insecure=self._issuer.insecure, what="jwks_uri")
        except ValueError as exc:
            raise FetchError(f"discovered jwks_uri refused: {safe(str(exc), 300)}") from None

    async def __call__(self) -> Any:
        jwks_uri = self._issuer.jwks_uri or await self.discover()
        return await fetch_json(self._client, jwks_uri, timeout_s=self._timeout_s, max_bytes=self._max_bytes)


class IssuerKeys:
    """The cached signing keys of one issuer; see the module docstring for the policy."""

    def __init__(
        self,
        issuer: str,
        fetch: Callable[[], Awaitable[Any]],
        *,
        refresh_s: float,
        max_stale_s: float,
        unknown_kid_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self._fetch = fetch
        self._refresh_s = refresh_s
        self._max_stale_s = max_stale_s
        self._retry_s = unknown_kid_interval_s
        self._clock = clock
        self._keys: dict[str, VerificationKey] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None
        self._completed = 0  # finished fetch attempts
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.fetch_count = 0  # attempts, for tests and debugging

    def _may_fetch(self, now: float) -> bool:
        return self._last_attempt is None or now - self._last_attempt >= self._retry_s

    async def refresh(self) -> None:
        """Fetch now; a caller that arrives while a fetch runs waits for it instead of fetching again."""
        seen = self._completed
        async with self._lock:
            if self._completed != seen:
                return
            self.fetch_count += 1
            self._last_attempt = self._clock()
            try:
                keys = parse_jwks(await self._fetch())
            except FetchError as exc:
                log.warning("signing keys of issuer %s not refreshed: %s", safe(self.issuer), exc)
                return
            except Exception as exc:
                log.warning(
                    "signing keys of issuer %s not refreshed: %s", safe(self.issuer), type(exc).__name__
                )
                return
            finally:
                self._completed += 1
            self._keys = keys
            self._fetched_at = self._clock()
            log.info("issuer %s: %d signing keys loaded", safe(self.issuer), len(keys))

    def _refresh_in_background(self, now: float) -> None:
        if (self._background is None or self._background.done()) and self._may_fetch(now):
            self._background = asyncio.get_running_loop().create_task(self.refresh())

    async def get(self, kid: str) -> VerificationKey:
        now = self._clock()
        if self._keys is not None and now - self._fetched_at > self._max_stale_s:
            log.warning("cached signing keys of issuer %s expired", safe(self.issuer))
            self._keys = None
        if self._keys is not None:
            if now - self._fetched_at >= self._refresh_s:
                self._refresh_in_background(now)
            key = self._keys.get(kid)
            if key is not None:
                return key
            if self._may_fetch(now) or self._lock.locked():
                await self.refresh()
                key = self._keys.get(kid) if self._keys is not None else None
                if key is not None:
                    return key
            raise TokenRejected(
                "unknown_kid",
                "the token's signing key (kid) is not among its issuer's current keys; obtain a fresh token",
            )
        if self._may_fetch(now) or self._lock.locked():
            await self.refresh()
        if self._keys is None:
            raise Unavailable(
                "the gateway cannot fetch the signing keys of the token's issuer right now; retry later"
            )
        return await self.get(kid)

    async def aclose(self) -> None:
        if self._background is not None and not self._background.done():
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
