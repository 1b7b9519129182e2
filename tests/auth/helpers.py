"""Reusable test helpers: issuer keys, JWKS documents, token minting (including malformed tokens).

Other test packages import these (e.g. end-to-end tests through the frontends)::

    from tests.auth.helpers import TestIssuer
    issuer = TestIssuer("https://issuer.test")
    token = issuer.token(scope="compute.read")
"""

from __future__ import annotations

import base64
import json
import time
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm, get_default_algorithms

from gateway.config import AuthSettings, IssuerSettings

AUDIENCE = "https://sonic-gateway.test"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@lru_cache(maxsize=8)
def ec_key(index: int = 0, curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}
    return ec.generate_private_key(curves[curve])


@lru_cache(maxsize=4)
def rsa_key(index: int = 0, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_jwk(key: Any, kid: str, **extra: Any) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", **extra}


def sign_raw(header: bytes | dict[str, Any], payload: bytes | dict[str, Any], key: Any, alg: str) -> str:
    """Sign arbitrary header/payload bytes (for crafting tokens pyjwt would refuse to produce)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(h)}.{b64url(p)}".encode()
    signature = get_default_algorithms()[alg].sign(signing_input, key)
    return f"{signing_input.decode()}.{b64url(signature)}"


class TestIssuer:
    """A fake issuer: keys, its JWKS, and tokens it signs."""

    __test__ = False

    def __init__(
        self,
        issuer: str = "https://issuer.test",
        *,
        profile: str = "wlcg",
        key: Any = None,
        kid: str = "key-1",
        alg: str = "ES256",
    ) -> None:
        self.issuer = issuer
        self.profile = profile
        self.key = key if key is not None else ec_key(0)
        self.kid = kid
        self.alg = alg
        self.extra_keys: list[dict[str, Any]] = []

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key, self.kid), *self.extra_keys]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_uri}

    def settings(self, **overrides: Any) -> IssuerSettings:
        values: dict[str, Any] = {
            "issuer": self.issuer,
            "profile": self.profile,
            "audience": [AUDIENCE],
            "jwks_uri": self.jwks_uri,
            "required_scopes": ["compute.read"],
        }
        values.update(overrides)
        return IssuerSettings(**values)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "alice",
            "aud": AUDIENCE,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": "jti-1",
            "scope": "compute.read",
        }
        if self.profile == "wlcg":
            claims["wlcg.ver"] = "1.0"
            claims["wlcg.groups"] = ["/dune"]
        elif self.profile == "scitokens":
            claims["ver"] = "scitoken:2.0"
        else:
            claims["groups"] = ["dune"]
        for name, value in overrides.items():
            name = name.replace("__", ".")
            if value is DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def header(self, **overrides: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        for name, value in overrides.items():
            if value is DROP:
                header.pop(name, None)
            else:
                header[name] = value
        return header

    def token(self, header: dict[str, Any] | None = None, key: Any = None, **claims: Any) -> str:
        h = header if header is not None else self.header()
        return sign_raw(
            h, self.claims(**claims), key if key is not None else self.key, h.get("alg", self.alg)
        )


DROP = object()


def auth_settings(*issuers: IssuerSettings, **overrides: Any) -> AuthSettings:
    return AuthSettings(issuers=list(issuers), **overrides)
