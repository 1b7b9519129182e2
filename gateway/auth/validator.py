"""Full validation of one bearer token against the trusted issuers: header, key, signature, claims.

Order: strict parse (no crypto) -> unverified ``iss`` against the allow-list by exact string (an
unknown issuer costs no fetch) -> header policy (alg allow-list, no header-supplied keys, no crit,
kid required) -> key by (issuer, kid) -> alg/key match -> signature -> claims of the issuer's profile.
Claims are trusted only after the signature verified.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import Algorithm, get_default_algorithms

from gateway.auth.errors import TokenRejected
from gateway.auth.jose import CompactJWS, parse_compact
from gateway.auth.keys import MAX_KID_LENGTH, IssuerKeys
from gateway.config import WLCG_ANY_AUDIENCE, IssuerSettings
from gateway.core.identity import Principal

log = logging.getLogger("gateway.auth")

_REFUSED_HEADER_KEYS = ("jwk", "jku", "x5u", "x5c")
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt", "application/jwt"})
_WLCG_VER = re.compile(r"1\.[0-9]{1,3}")
SCITOKENS_VER = "scitoken:2.0"
MAX_SUBJECT_LENGTH = 1024
MAX_SCOPES = 256
MAX_GROUPS = 256


@dataclass(frozen=True)
class TrustedIssuer:
    settings: IssuerSettings
    keys: IssuerKeys
    audiences: frozenset[str]
    algorithms: frozenset[str]
    groups_claim: str | None


class ValidatedToken:
    """What a successful validation yields: the caller and how long the result may be cached."""

    __slots__ = ("cache_until", "principal")

    def __init__(self, principal: Principal, cache_until: float) -> None:
        self.principal = principal
        self.cache_until = cache_until


def _reject(detail: str, message: str) -> TokenRejected:
    return TokenRejected(detail, message)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and not math.isfinite(value))


def _string_list(value: Any, claim: str, limit: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _reject("invalid_claim", f"the {claim!r} claim must be a list of strings")
    if len(value) > limit:
        raise _reject("invalid_claim", f"the {claim!r} claim has more than {limit} entries")
    return value


class TokenValidator:
    """Validates tokens; holds the trusted issuers keyed by their exact ``iss`` string."""

    def __init__(self, issuers: dict[str, TrustedIssuer], clock: Callable[[], float] = time.time) -> None:
        self.issuers = issuers
        self._clock = clock
        self._algorithms: dict[str, Algorithm] = {
            name: alg
            for name, alg in get_default_algorithms().items()
            if name in {a for i in issuers.values() for a in i.algorithms}
        }

    def issuer_of(self, jws: CompactJWS) -> TrustedIssuer:
        iss = jws.payload.get("iss")
        if not isinstance(iss, str):
            raise _reject("missing_claim", "the token has no 'iss' (issuer) claim")
        trusted = self.issuers.get(iss)
        if trusted is None:
            raise _reject("unknown_issuer", "the token's issuer is not trusted by this gateway")
        return trusted

    def check_header(self, header: dict[str, Any], trusted: TrustedIssuer) -> tuple[str, str]:
        if "enc" in header:
            raise _reject("jwe_refused", "encrypted tokens (JWE) are not accepted; send a signed JWT")
        for name in _REFUSED_HEADER_KEYS:
            if name in header:
                raise _reject(
                    "header_key_refused",
                    f"the token header carries '{name}'; keys supplied by a token are never used",
                )
        if "crit" in header:
            raise _reject("crit_refused", "the token header has a 'crit' parameter, which is not supported")
        if "b64" in header or "zip" in header:
            raise _reject("malformed", "the token header uses an unsupported JWS extension")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise _reject("malformed", "the token header has no 'alg'")
        if alg not in trusted.algorithms or alg not in self._algorithms:
            raise _reject(
                "alg_not_allowed",
                "the token's signing algorithm is not accepted for its issuer "
                f"(accepted: {', '.join(sorted(trusted.algorithms))})",
            )
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
            raise _reject("malformed", "the token header's 'typ' is not a JWT access token type")
        kid = header.get("kid")
        if kid is None:
            raise _reject("missing_kid", "the token header has no 'kid' (key id)")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
            raise _reject("invalid_kid", "the token header's 'kid' is not a short string")
        return alg, kid

    def verify_signature(self, jws: CompactJWS, alg: str, key: Any) -> None:
        try:
            ok = self._algorithms[alg].verify(jws.signing_input, key, jws.signature)
        except Exception:  # any library failure on attacker-chosen bytes is a bad signature
            ok = False
        if not ok:
            raise _reject("bad_signature", "the token's signature does not verify")

    def check_claims(self, claims: dict[str, Any], trusted: TrustedIssuer) -> ValidatedToken:
        settings = trusted.settings
        for name in ("sub", "aud", "exp", "iat"):
            if name not in claims:
                raise _reject("missing_claim", f"the token has no {name!r} claim")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH:
            raise _reject("invalid_claim", "the token's 'sub' claim must be a non-empty string")
        for name in ("exp", "iat", "nbf"):
            if name in claims and not _is_number(claims[name]):
                raise _reject("invalid_claim", f"the token's {name!r} claim must be a number")
        now = self._clock()
        leeway = settings.leeway_s
        exp, iat = claims["exp"], claims["iat"]
        if iat > now + leeway:
            raise _reject("issued_in_future", "the token's 'iat' lies in the future; check clocks")
        if exp - iat > settings.max_lifetime_s:
            raise _reject(
                "lifetime_too_long",
                f"the token is valid for longer than its issuer's maximum of {settings.max_lifetime_s:.0f} s",
            )
        if exp <= iat:
            raise _reject("invalid_claim", "the token's 'exp' is not after its 'iat'")
        if now >= exp + leeway:
            raise _reject("expired", "the token has expired; obtain a fresh token")
        nbf = claims.get("nbf")
        if nbf is not None and nbf > now + leeway:
            raise _reject("not_yet_valid", "the token is not valid yet ('nbf' lies in the future)")
        self._check_audience(claims["aud"], trusted)
        self._check_profile(claims, settings)
        principal = Principal(
            issuer=settings.issuer,
            subject=sub,
            scopes=self._scopes(claims, settings),
            groups=self._groups(claims, trusted),
            expires_at=float(exp),
        )
        return ValidatedToken(principal, cache_until=float(exp) + leeway)

    @staticmethod
    def _check_audience(aud: Any, trusted: TrustedIssuer) -> None:
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise _reject("invalid_claim", "the token's 'aud' claim must be a string or a list of strings")
        if any(v in trusted.audiences for v in values):
            return
        if trusted.settings.allow_any_audience and WLCG_ANY_AUDIENCE in values:
            return
        raise _reject("wrong_audience", "the token is not meant for this gateway (audience mismatch)")

    @staticmethod
    def _check_profile(claims: dict[str, Any], settings: IssuerSettings) -> None:
        if settings.profile == "wlcg":
            ver = claims.get("wlcg.ver")
            if ver is None:
                raise _reject("missing_claim", "a WLCG token needs a 'wlcg.ver' claim")
            if not isinstance(ver, str) or _WLCG_VER.fullmatch(ver) is None:
                raise _reject("unsupported_version", "the token's 'wlcg.ver' is not a 1.x version")
        elif settings.profile == "scitokens":
            ver = claims.get("ver")
            if ver is None:
                raise _reject("missing_claim", f"a SciToken needs a 'ver' claim ({SCITOKENS_VER})")
            if ver != SCITOKENS_VER:
                raise _reject("unsupported_version", f"the token's 'ver' is not {SCITOKENS_VER}")

    @staticmethod
    def _scopes(claims: dict[str, Any], settings: IssuerSettings) -> frozenset[str]:
        scopes: list[str] = []
        scope = claims.get("scope")
        if scope is not None:
            if not isinstance(scope, str):
                raise _reject("invalid_claim", "the token's 'scope' claim must be a space-separated string")
            scopes.extend(scope.split())
        if settings.profile == "oidc" and "scp" in claims:
            scopes.extend(_string_list(claims["scp"], "scp", MAX_SCOPES))
        if len(scopes) > MAX_SCOPES:
            raise _reject("invalid_claim", f"the token has more than {MAX_SCOPES} scopes")
        return frozenset(scopes)

    @staticmethod
    def _groups(claims: dict[str, Any], trusted: TrustedIssuer) -> frozenset[str]:
        if trusted.groups_claim is None or trusted.groups_claim not in claims:
            return frozenset()
        return frozenset(_string_list(claims[trusted.groups_claim], trusted.groups_claim, MAX_GROUPS))

    async def validate(self, token: str) -> ValidatedToken:
        jws = parse_compact(token)
        trusted = self.issuer_of(jws)
        alg, kid = self.check_header(jws.header, trusted)
        key = await trusted.keys.get(kid)
        mismatch = key.mismatch(alg)
        if mismatch is not None:
            raise _reject("key_mismatch", f"the token's algorithm does not fit its key: {mismatch}")
        self.verify_signature(jws, alg, key.key)
        return self.check_claims(jws.payload, trusted)
