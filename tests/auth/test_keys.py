"""Signing keys over (mocked) HTTPS: discovery, rotation, rate limits, outages, slow and hostile issuers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gateway.auth import TokenRejected
from gateway.config import AuthSettings
from gateway.errors import Unavailable, status_of

from .conftest import FakeClock
from .helpers import TestIssuer, ec_key, public_jwk


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def test_discovery_then_jwks(make_auth: Any, router: Any, issuer: TestIssuer) -> None:
    discovery = router.get("https://issuer.test/.well-known/openid-configuration").respond(
        json=issuer.discovery()
    )
    jwks = router.get(issuer.jwks_uri).respond(json=issuer.jwks())
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings(jwks_uri=None)]))
    assert (await authn.authenticate(bearer(issuer.token()))).subject == "alice"
    assert discovery.call_count == 1
    assert jwks.call_count == 1


async def test_discovery_issuer_mismatch_is_refused(make_auth: Any, router: Any, issuer: TestIssuer) -> None:
    router.get("https://issuer.test/.well-known/openid-configuration").respond(
        json={"issuer": "https://evil.test", "jwks_uri": issuer.jwks_uri}
    )
    jwks = router.get(issuer.jwks_uri).respond(json=issuer.jwks())
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings(jwks_uri=None)]))
    with pytest.raises(Unavailable) as info:
        await authn.authenticate(bearer(issuer.token()))
    assert status_of(info.value).http_status == 503
    assert jwks.call_count == 0


async def test_discovered_plain_http_jwks_uri_is_refused(
    make_auth: Any, router: Any, issuer: TestIssuer
) -> None:
    router.get("https://issuer.test/.well-known/openid-configuration").respond(
        json={"issuer": issuer.issuer, "jwks_uri": "http://issuer.test/jwks"}
    )
    plain = router.get("http://issuer.test/jwks").respond(json=issuer.jwks())
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings(jwks_uri=None)]))
    with pytest.raises(Unavailable):
        await authn.authenticate(bearer(issuer.token()))
    assert plain.call_count == 0


async def test_insecure_loopback_issuer(make_auth: Any, router: Any) -> None:
    local = TestIssuer("http://127.0.0.1:8999")
    router.get("http://127.0.0.1:8999/.well-known/openid-configuration").respond(json=local.discovery())
    router.get(local.jwks_uri).respond(json=local.jwks())
    authn, _ = make_auth(AuthSettings(issuers=[local.settings(jwks_uri=None, insecure=True)]))
    assert (await authn.authenticate(bearer(local.token()))).issuer == "http://127.0.0.1:8999"


async def test_key_rotation_without_restart(
    auth: Any, issuer: TestIssuer, serve_jwks: Any, monotonic: FakeClock
) -> None:
    authn, _ = auth
    await authn.authenticate(bearer(issuer.token()))
    issuer.key, issuer.kid = ec_key(5), "key-2"  # the issuer rotates
    monotonic.advance(61)
    assert (await authn.authenticate(bearer(issuer.token(sub="bob")))).subject == "bob"
    assert serve_jwks.call_count == 2


async def test_unknown_kid_flood_is_not_a_fetch_flood(
    auth: Any, issuer: TestIssuer, serve_jwks: Any, monotonic: FakeClock
) -> None:
    authn, _ = auth
    await authn.authenticate(bearer(issuer.token()))
    for round_ in range(3):
        for i in range(50):
            with pytest.raises(TokenRejected) as info:
                await authn.authenticate(bearer(issuer.token(issuer.header(kid=f"made-up-{round_}-{i}"))))
            assert info.value.detail == "unknown_kid"
        monotonic.advance(61)
    assert serve_jwks.call_count == 3  # the first fetch, then at most one per 60 s interval


async def test_concurrent_unknown_kids_share_one_fetch(
    auth: Any, issuer: TestIssuer, serve_jwks: Any
) -> None:
    authn, _ = auth
    tokens = [issuer.token(issuer.header(kid=f"k{i}")) for i in range(20)]
    results = await asyncio.gather(*(authn.authenticate(bearer(t)) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, TokenRejected) and r.detail == "unknown_kid" for r in results)
    assert serve_jwks.call_count == 1


async def test_outage_serves_last_good_keys_until_they_expire(
    make_auth: Any, router: Any, issuer: TestIssuer, monotonic: FakeClock
) -> None:
    up = True

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=issuer.jwks()) if up else httpx.Response(503)

    route = router.get(issuer.jwks_uri).mock(side_effect=answer)
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]))
    await authn.authenticate(bearer(issuer.token()))
    up = False
    monotonic.advance(7 * 3600)  # past the refresh interval: a background refresh fails
    authn.clear_cache()
    assert (await authn.authenticate(bearer(issuer.token()))).subject == "alice"
    await asyncio.sleep(0.01)
    assert route.call_count == 2
    monotonic.advance(2 * 86400)  # past max stale: the keys are gone, the issuer is still down
    authn.clear_cache()
    with pytest.raises(Unavailable):
        await authn.authenticate(bearer(issuer.token()))
    up = True
    monotonic.advance(61)
    assert (await authn.authenticate(bearer(issuer.token()))).subject == "alice"


async def test_periodic_refresh_picks_up_new_keys(
    auth: Any, issuer: TestIssuer, serve_jwks: Any, monotonic: FakeClock
) -> None:
    authn, _ = auth
    await authn.authenticate(bearer(issuer.token()))
    monotonic.advance(3599)
    authn.clear_cache()
    await authn.authenticate(bearer(issuer.token()))
    assert serve_jwks.call_count == 1  # cached for (at least) an hour
    monotonic.advance(6 * 3600)
    authn.clear_cache()
    await authn.authenticate(bearer(issuer.token()))
    await asyncio.sleep(0.01)
    assert serve_jwks.call_count == 2


async def test_issuer_down_from_the_start_is_503_and_rate_limited(
    make_auth: Any, router: Any, issuer: TestIssuer
) -> None:
    route = router.get(issuer.jwks_uri).mock(side_effect=httpx.ConnectError("refused"))
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]))
    for _ in range(10):
        with pytest.raises(Unavailable):
            await authn.authenticate(bearer(issuer.token()))
    assert route.call_count == 1


async def test_slow_issuer_times_out(make_auth: Any, router: Any, issuer: TestIssuer) -> None:
    calls = []

    async def slow(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        await asyncio.sleep(5)
        return httpx.Response(200, json=issuer.jwks())

    router.get(issuer.jwks_uri).mock(side_effect=slow)
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()], http_timeout_s=0.2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        *(authn.authenticate(bearer(issuer.token())) for _ in range(5)), return_exceptions=True
    )
    assert loop.time() - started < 2
    assert all(isinstance(r, Unavailable) for r in results)
    assert len(calls) == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"x" * (300 * 1024)),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"keys": "nope"}),
        httpx.Response(200, json={"keys": []}),
        httpx.Response(200, json=[1, 2]),
        httpx.Response(302, headers={"location": "https://evil.test/jwks"}),
        httpx.Response(404),
    ],
)
async def test_hostile_jwks_answers(
    make_auth: Any, router: Any, issuer: TestIssuer, response: httpx.Response
) -> None:
    router.get(issuer.jwks_uri).mock(return_value=response)
    evil = router.get("https://evil.test/jwks").respond(json=issuer.jwks())
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]))
    with pytest.raises(Unavailable):
        await authn.authenticate(bearer(issuer.token()))
    assert evil.call_count == 0


async def test_jwks_private_members_are_ignored(make_auth: Any, router: Any, issuer: TestIssuer) -> None:
    from jwt.algorithms import ECAlgorithm

    leaked = {**ECAlgorithm.to_jwk(issuer.key, as_dict=True), "kid": issuer.kid}
    router.get(issuer.jwks_uri).respond(json={"keys": [leaked]})
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]))
    assert (await authn.authenticate(bearer(issuer.token()))).subject == "alice"


async def test_unusable_jwks_entries_are_skipped(make_auth: Any, router: Any, issuer: TestIssuer) -> None:
    entries = [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**public_jwk(ec_key(6), "enc-key"), "use": "enc"},
        {"kty": "EC", "kid": "bad-point", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        "not an object",
        public_jwk(issuer.key, issuer.kid),
    ]
    router.get(issuer.jwks_uri).respond(json={"keys": entries})
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]))
    assert (await authn.authenticate(bearer(issuer.token()))).subject == "alice"
    with pytest.raises(TokenRejected) as info:
        await authn.authenticate(bearer(issuer.token(issuer.header(kid="enc-key"), key=ec_key(6))))
    assert info.value.detail == "unknown_kid"
