"""Adversarial tokens: each is rejected with 401, an RFC 6750 reason and a specific detail."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from gateway.auth import TokenAuthenticator, TokenRejected
from gateway.config import AuthSettings
from gateway.errors import status_of

from .helpers import AUDIENCE, DROP, TestIssuer, b64url, ec_key, public_jwk, rsa_key, sign_raw

Auth = tuple[TokenAuthenticator, Any]


async def rejected(authn: TokenAuthenticator, header: str | None) -> TokenRejected:
    with pytest.raises(TokenRejected) as info:
        await authn.authenticate(header)
    error = info.value
    assert status_of(error).http_status == 401
    assert status_of(error).grpc_code == "UNAUTHENTICATED"
    if header and len(header) > 20:
        assert header.split()[-1][-20:] not in error.message  # never echoes the token
    return error


async def assert_rejected(
    authn: TokenAuthenticator, header: str | None, detail: str, reason: str = "invalid_token"
) -> None:
    error = await rejected(authn, header)
    assert (error.reason, error.detail) == (reason, detail), error.message


def bearer(token: str) -> str:
    return f"Bearer {token}"


def with_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


# --- the authorization header itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("   ", "missing_token"),
        ("Basic YWxpY2U6c2VjcmV0", "unsupported_scheme"),
        ("Token abc", "unsupported_scheme"),
        ("Bearer", "malformed_header"),
        ("Bearer    ", "malformed_header"),
        ("Bearer abc def", "malformed_header"),
    ],
)
async def test_header_shape(auth: Auth, header: str | None, detail: str) -> None:
    await assert_rejected(auth[0], header, detail, reason="invalid_request")


async def test_bearer_scheme_is_case_insensitive(auth: Auth, issuer: TestIssuer) -> None:
    principal = await auth[0].authenticate("bearer " + issuer.token())
    assert principal.subject == "alice"


async def test_oversized_header(auth: Auth) -> None:
    await assert_rejected(auth[0], "Bearer " + "a" * 9000, "too_large")


async def test_oversized_token_under_header_cap(auth: Auth, issuer: TestIssuer) -> None:
    token = issuer.token(padding="x" * 5800)
    assert 8192 < len(token) < 8192 + 64
    await assert_rejected(auth[0], bearer(token), "too_large")


# --- strict compact-JWS parsing -----------------------------------------------------------------


async def test_two_segments(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token().rsplit(".", 1)[0]), "malformed")


async def test_four_segments(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token() + ".AAAA"), "malformed")


async def test_jwe_refused(auth: Auth) -> None:
    jwe = ".".join([b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM"}'), "AAAA", "AAAA", "AAAA", "AAAA"])
    await assert_rejected(auth[0], bearer(jwe), "jwe_refused")


async def test_enc_header_in_three_segments_refused(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(enc="A256GCM"))), "jwe_refused")


async def test_unsigned_token_with_empty_signature(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(with_segment(issuer.token(), 2, "")), "malformed")


async def test_base64_padding_refused(auth: Auth, issuer: TestIssuer) -> None:
    token = issuer.token()
    header = token.split(".")[0]
    padded = header + "=" * (-len(header) % 4 or 4)
    await assert_rejected(auth[0], bearer(with_segment(token, 0, padded)), "malformed")


async def test_standard_base64_alphabet_refused(auth: Auth, issuer: TestIssuer) -> None:
    token = issuer.token()
    signature = base64.b64encode(b"\xfb\xff" * 32).rstrip(b"=").decode()
    assert "+" in signature or "/" in signature
    await assert_rejected(auth[0], bearer(with_segment(token, 2, signature)), "malformed")


async def test_non_canonical_final_character(auth: Auth, issuer: TestIssuer) -> None:
    token = issuer.token()
    signature = token.split(".")[2]  # 64 bytes -> 86 chars: the last one carries 2 unused bits
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    tweaked = alphabet[alphabet.index(last) ^ 1]
    forged = with_segment(token, 2, signature[:-1] + tweaked)
    await assert_rejected(auth[0], bearer(forged), "malformed")


async def test_impossible_base64_length(auth: Auth, issuer: TestIssuer) -> None:
    token = issuer.token()
    await assert_rejected(auth[0], bearer(with_segment(token, 2, token.split(".")[2] + "AAA")), "malformed")


async def test_non_ascii_token(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token() + "é"), "malformed")


async def test_header_not_json(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(
        auth[0], bearer(with_segment(issuer.token(), 0, b64url(b"{alg:ES256"))), "malformed"
    )


async def test_header_is_json_array(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(with_segment(issuer.token(), 0, b64url(b'["ES256"]'))), "malformed")


async def test_header_not_utf8(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(
        auth[0], bearer(with_segment(issuer.token(), 0, b64url(b'{"alg":"\xff"}'))), "malformed"
    )


async def test_deeply_nested_payload_never_reaches_json(auth: Auth, issuer: TestIssuer) -> None:
    payload = b'{"iss":"https://issuer.test","x":' + b"[" * 2000 + b"]" * 2000 + b"}"
    token = sign_raw(issuer.header(), payload, issuer.key, "ES256")
    await assert_rejected(auth[0], bearer(token), "malformed")


async def test_nesting_inside_strings_is_not_counted(auth: Auth, issuer: TestIssuer) -> None:
    principal = await auth[0].authenticate(bearer(issuer.token(note="[[[[[[[[[[[[[[[[{{{{{{{{{{")))
    assert principal.subject == "alice"


async def test_duplicate_claim_names(auth: Auth, issuer: TestIssuer) -> None:
    claims = json.dumps(issuer.claims())[:-1] + ', "sub": "root"}'
    token = sign_raw(issuer.header(), claims.encode(), issuer.key, "ES256")
    await assert_rejected(auth[0], bearer(token), "malformed")


async def test_nan_in_claims(auth: Auth, issuer: TestIssuer) -> None:
    claims = json.dumps(issuer.claims())[:-1] + ', "exp2": NaN}'
    token = sign_raw(issuer.header(), claims.encode(), issuer.key, "ES256")
    await assert_rejected(auth[0], bearer(token), "malformed")


async def test_float_overflow_in_exp(auth: Auth, issuer: TestIssuer) -> None:
    claims = json.dumps(issuer.claims(exp=DROP))[:-1] + ', "exp": 1e400}'
    token = sign_raw(issuer.header(), claims.encode(), issuer.key, "ES256")
    await assert_rejected(auth[0], bearer(token), "malformed")


async def test_integer_with_too_many_digits(auth: Auth, issuer: TestIssuer) -> None:
    claims = json.dumps(issuer.claims(exp=DROP))[:-1] + ', "exp": ' + "9" * 5000 + "}"
    token = sign_raw(issuer.header(), claims.encode(), issuer.key, "ES256")
    assert len(token) <= 8192
    await assert_rejected(auth[0], bearer(token), "malformed")


async def test_huge_integer_exp_is_not_an_overflow(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(exp=2**4000)), "lifetime_too_long")


# --- issuer allow-list before any fetch ------------------------------------------------------------


async def test_unknown_issuer_costs_no_request(auth: Auth, issuer: TestIssuer, serve_jwks: Any) -> None:
    stranger = TestIssuer("https://evil.test", key=ec_key(1))
    await assert_rejected(auth[0], bearer(stranger.token(iss="https://evil.test")), "unknown_issuer")
    assert serve_jwks.call_count == 0


async def test_issuer_compared_exactly(auth: Auth, issuer: TestIssuer, serve_jwks: Any) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(iss=issuer.issuer + "/")), "unknown_issuer")
    await assert_rejected(auth[0], bearer(issuer.token(iss=issuer.issuer.upper())), "unknown_issuer")
    assert serve_jwks.call_count == 0


async def test_missing_issuer(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(iss=DROP)), "missing_claim")


async def test_issuer_not_a_string(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(iss=["https://issuer.test"])), "missing_claim")


# --- header policy ---------------------------------------------------------------------------------


async def test_alg_none(auth: Auth, issuer: TestIssuer) -> None:
    header = b64url(json.dumps(issuer.header(alg="none")).encode())
    payload = b64url(json.dumps(issuer.claims()).encode())
    await assert_rejected(auth[0], bearer(f"{header}.{payload}.AAAA"), "alg_not_allowed")


async def test_hmac_with_public_key_as_secret(auth: Auth, issuer: TestIssuer) -> None:
    """Classic key confusion: HS256 'signed' with the issuer's public JWK as HMAC secret."""
    from jwt.algorithms import HMACAlgorithm

    secret = json.dumps(public_jwk(issuer.key, issuer.kid)).encode()
    header = b64url(json.dumps(issuer.header(alg="HS256")).encode())
    payload = b64url(json.dumps(issuer.claims()).encode())
    mac = HMACAlgorithm(HMACAlgorithm.SHA256).sign(f"{header}.{payload}".encode(), secret)
    await assert_rejected(auth[0], bearer(f"{header}.{payload}.{b64url(mac)}"), "alg_not_allowed")


async def test_alg_not_on_issuer_list(auth: Auth, issuer: TestIssuer) -> None:
    token = sign_raw(issuer.header(alg="ES384"), issuer.claims(), ec_key(2, "P-384"), "ES384")
    await assert_rejected(auth[0], bearer(token), "alg_not_allowed")


async def test_alg_does_not_match_key_type(make_auth: Any, issuer: TestIssuer, serve_jwks: Any) -> None:
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings(algorithms=["RS256", "ES256"])]))
    token = sign_raw(issuer.header(alg="RS256"), issuer.claims(), rsa_key(0), "RS256")
    await assert_rejected(authn, bearer(token), "key_mismatch")


async def test_jwk_alg_must_match(make_auth: Any, issuer: TestIssuer, serve_jwks: Any) -> None:
    other = ec_key(3)
    issuer.extra_keys.append(public_jwk(other, "declared-es384", alg="ES384", crv="P-256"))
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]))
    token = sign_raw(issuer.header(kid="declared-es384"), issuer.claims(), other, "ES256")
    await assert_rejected(authn, bearer(token), "key_mismatch")


@pytest.mark.parametrize("name", ["jwk", "jku", "x5u", "x5c"])
async def test_header_supplied_keys_refused(auth: Auth, issuer: TestIssuer, name: str) -> None:
    value: Any = public_jwk(issuer.key, issuer.kid) if name == "jwk" else "https://evil.test/keys"
    if name == "x5c":
        value = ["MIIB"]
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(**{name: value}))), "header_key_refused")


async def test_crit_refused(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(crit=["exp"], exp=1))), "crit_refused")


async def test_missing_kid(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(kid=DROP))), "missing_kid")


@pytest.mark.parametrize("kid", [7, "", ["key-1"], "k" * 300])
async def test_invalid_kid(auth: Auth, issuer: TestIssuer, kid: Any) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(kid=kid))), "invalid_kid")


async def test_unexpected_typ(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(typ="dpop+jwt"))), "malformed")


async def test_unknown_kid(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(issuer.header(kid="nope"))), "unknown_kid")


# --- signatures ------------------------------------------------------------------------------------


async def test_signed_by_another_key(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(key=ec_key(4))), "bad_signature")


async def test_payload_swapped_after_signing(auth: Auth, issuer: TestIssuer) -> None:
    token = issuer.token()
    forged_payload = b64url(json.dumps(issuer.claims(sub="root", scope="gateway.admin")).encode())
    await assert_rejected(auth[0], bearer(with_segment(token, 1, forged_payload)), "bad_signature")


async def test_signature_of_wrong_length(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(
        auth[0], bearer(with_segment(issuer.token(), 2, b64url(b"\x01" * 63))), "bad_signature"
    )


async def test_weak_rsa_key_is_never_loaded(make_auth: Any, issuer: TestIssuer, serve_jwks: Any) -> None:
    weak = rsa_key(1, bits=1024)
    issuer.extra_keys.append(public_jwk(weak, "weak"))
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings(algorithms=["RS256", "ES256"])]))
    token = sign_raw(issuer.header(alg="RS256", kid="weak"), issuer.claims(), weak, "RS256")
    await assert_rejected(authn, bearer(token), "unknown_kid")


# --- claims ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["sub", "aud", "exp", "iat"])
async def test_required_claims(auth: Auth, issuer: TestIssuer, claim: str) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(**{claim: DROP})), "missing_claim")


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "9999999999"), ("exp", True), ("iat", None), ("nbf", "0"), ("sub", ""), ("sub", 42)],
)
async def test_claim_types(auth: Auth, issuer: TestIssuer, claim: str, value: Any) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(**{claim: value})), "invalid_claim")


async def test_expired(auth: Auth, issuer: TestIssuer) -> None:
    now = int(time.time())
    await assert_rejected(auth[0], bearer(issuer.token(iat=now - 1000, exp=now - 61)), "expired")


async def test_expired_within_leeway_is_accepted(auth: Auth, issuer: TestIssuer) -> None:
    now = int(time.time())
    assert (await auth[0].authenticate(bearer(issuer.token(iat=now - 1000, exp=now - 30)))).subject == "alice"


async def test_issued_in_future(auth: Auth, issuer: TestIssuer) -> None:
    now = int(time.time())
    await assert_rejected(auth[0], bearer(issuer.token(iat=now + 300, exp=now + 900)), "issued_in_future")


async def test_not_yet_valid(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(nbf=int(time.time()) + 300)), "not_yet_valid")


async def test_lifetime_too_long(auth: Auth, issuer: TestIssuer) -> None:
    now = int(time.time())
    await assert_rejected(auth[0], bearer(issuer.token(iat=now, exp=now + 6 * 3600 + 1)), "lifetime_too_long")


async def test_exp_before_iat(auth: Auth, issuer: TestIssuer) -> None:
    now = int(time.time())
    await assert_rejected(auth[0], bearer(issuer.token(iat=now, exp=now - 1)), "invalid_claim")


@pytest.mark.parametrize(
    "aud",
    [
        "https://other.test",
        AUDIENCE + "/",
        AUDIENCE.upper(),
        ["https://other.test"],
        "https://wlcg.cern.ch/jwt/v1/any",
    ],
)
async def test_wrong_audience(auth: Auth, issuer: TestIssuer, aud: Any) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(aud=aud)), "wrong_audience")


@pytest.mark.parametrize("aud", [[], [AUDIENCE, 3], {"aud": AUDIENCE}])
async def test_malformed_audience(auth: Auth, issuer: TestIssuer, aud: Any) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(aud=aud)), "invalid_claim")


async def test_audience_in_list_is_accepted(auth: Auth, issuer: TestIssuer) -> None:
    principal = await auth[0].authenticate(bearer(issuer.token(aud=["https://other.test", AUDIENCE])))
    assert principal.issuer == issuer.issuer


async def test_any_audience_only_where_allowed(make_auth: Any, issuer: TestIssuer, serve_jwks: Any) -> None:
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings(allow_any_audience=True)]))
    principal = await authn.authenticate(bearer(issuer.token(aud="https://wlcg.cern.ch/jwt/v1/any")))
    assert principal.subject == "alice"


async def test_wlcg_version_required(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(wlcg__ver=DROP)), "missing_claim")


@pytest.mark.parametrize("ver", ["2.0", 1.0, "1", "1.0.0.0", "10.0"])
async def test_wlcg_version_must_be_1x(auth: Auth, issuer: TestIssuer, ver: Any) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(wlcg__ver=ver)), "unsupported_version")


async def test_scope_must_be_a_string(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(scope=["compute.read"])), "invalid_claim")


async def test_groups_must_be_a_list_of_strings(auth: Auth, issuer: TestIssuer) -> None:
    await assert_rejected(auth[0], bearer(issuer.token(wlcg__groups="/dune")), "invalid_claim")
    await assert_rejected(auth[0], bearer(issuer.token(wlcg__groups=["/dune", {"x": 1}])), "invalid_claim")


async def test_library_surprise_becomes_401(
    auth: Auth, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(token: str) -> Any:
        raise RecursionError("deep inside a library")

    monkeypatch.setattr(auth[0].validator, "validate", explode)
    await assert_rejected(auth[0], bearer(issuer.token()), "malformed")


async def test_overflow_inside_signature_check_becomes_401(
    auth: Auth, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    algorithm = auth[0].validator._algorithms["ES256"]

    def explode(*args: Any) -> bool:
        raise OverflowError("int too large")

    monkeypatch.setattr(algorithm, "verify", explode)
    await assert_rejected(auth[0], bearer(issuer.token()), "bad_signature")
