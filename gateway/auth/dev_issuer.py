"""The local development issuer: a keypair in a directory, tokens minted with it, trusted offline.

The gateway trusts it by reading the public JWKS from the key directory (no network), so tokens it
mints go through exactly the same validation as tokens from real issuers. Configuration refuses to
enable it next to real issuers unless ``auth.allow_dev_issuer_with_real_issuers`` is set.

Layout of ``key_dir`` (created 0700): ``private.pem`` (PKCS#8, 0600) and ``jwks.json`` (public).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.config import DevIssuerSettings, IssuerSettings

PRIVATE_KEY_FILE = "private.pem"
JWKS_FILE = "jwks.json"
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


class DevIssuerError(Exception):
    """The dev issuer cannot be used (bad key directory, bad request); the message says why."""


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint, used as the ``kid``."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def issuer_settings(settings: DevIssuerSettings) -> IssuerSettings:
    """How the gateway trusts the dev issuer: a WLCG-profile issuer whose keys come from ``key_dir``."""
    return IssuerSettings(
        issuer=settings.issuer,
        profile="wlcg",
        audience=list(settings.audience),
        required_scopes=list(settings.required_scopes),
        groups_claim="wlcg.groups",
        algorithms=[settings.algorithm],
        max_lifetime_s=settings.max_lifetime_s,
    )


class DevIssuer:
    def __init__(self, settings: DevIssuerSettings) -> None:
        self.settings = settings
        self.key_dir = Path(settings.key_dir).expanduser()

    @property
    def private_key_path(self) -> Path:
        return self.key_dir / PRIVATE_KEY_FILE

    @property
    def jwks_path(self) -> Path:
        return self.key_dir / JWKS_FILE

    def _new_private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        if self.settings.algorithm == "ES256":
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def ensure_keys(self) -> None:
        """Create the directory and keypair if missing (safe against a concurrent creator)."""
        if not self.key_dir.is_dir():
            self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.key_dir, 0o700)
        if not self.private_key_path.exists():
            pem = self._new_private_key().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            tmp = self.key_dir / f".{PRIVATE_KEY_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
                # link() fails if another process won the race: then its key is the key.
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.private_key_path)
            finally:
                tmp.unlink(missing_ok=True)
        self._write_jwks()

    def _load_private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        path = self.private_key_path
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            raise DevIssuerError(
                f"no dev issuer key at {path}; run the gateway or `sonic-gateway token`"
            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DevIssuerError(f"{path} is readable by others; run: chmod 600 {path}")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise DevIssuerError(f"{path} is not a usable private key: {exc}") from None
        wanted: type = ec.EllipticCurvePrivateKey if self.settings.algorithm == "ES256" else rsa.RSAPrivateKey
        if not isinstance(key, wanted):
            raise DevIssuerError(
                f"{path} holds a key that does not fit algorithm {self.settings.algorithm}; "
                "remove the directory to create a new key"
            )
        assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        return key

    def _public_jwk(self, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> dict[str, Any]:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        else:
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        public = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
        return {**public, "kid": jwk_thumbprint(public), "use": "sig", "alg": self.settings.algorithm}

    def _write_jwks(self) -> None:
        document = {"keys": [self._public_jwk(self._load_private_key())]}
        text = json.dumps(document, indent=2, sort_keys=True)
        if self.jwks_path.exists() and self.jwks_path.read_text() == text:
            return
        tmp = self.key_dir / f".{JWKS_FILE}.{os.getpid()}.{uuid.uuid4().hex}"
        tmp.write_text(text)
        os.replace(tmp, self.jwks_path)

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS the gateway trusts (keys created on first use)."""
        self.ensure_keys()
        document: dict[str, Any] = json.loads(self.jwks_path.read_text())
        return document

    def mint(
        self,
        subject: str,
        scopes: list[str] | tuple[str, ...] = ("compute.read",),
        groups: list[str] | tuple[str, ...] = (),
        lifetime_s: float = 3600,
        audience: str | list[str] | None = None,
        *,
        now: float | None = None,
    ) -> str:
        """A signed WLCG-profile access token from the dev issuer."""
        if not subject:
            raise DevIssuerError("the subject must not be empty")
        if not 1 <= lifetime_s <= self.settings.max_lifetime_s:
            raise DevIssuerError(f"lifetime must be between 1 and {self.settings.max_lifetime_s:.0f} seconds")
        self.ensure_keys()
        key = self._load_private_key()
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": subject,
            "aud": audience if audience is not None else self.settings.audience[0],
            "iat": issued,
            "nbf": issued,
            "exp": issued + int(lifetime_s),
            "jti": uuid.uuid4().hex,
            "wlcg.ver": "1.0",
            "scope": " ".join(scopes),
        }
        if groups:
            claims["wlcg.groups"] = list(groups)
        headers = {"kid": self._public_jwk(key)["kid"], "typ": "at+jwt"}
        return jwt.encode(claims, key, algorithm=self.settings.algorithm, headers=headers)
