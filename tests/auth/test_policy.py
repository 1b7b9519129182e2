"""Authorization, the token cache, metrics, WWW-Authenticate and the settings rules."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.auth import AccessDenied, TokenRejected, build_auth, www_authenticate
from gateway.config import AuthSettings, ConfigError, IssuerSettings, load_settings
from gateway.core.identity import AllowAllAuthenticator, AllowAllAuthorizer, Principal
from gateway.errors import PermissionDenied, Unauthenticated, status_of

from .helpers import TestIssuer

ISS = "https://issuer.test"


def bearer(token: str) -> str:
    return f"Bearer {token}"


def denied(call: Any, *args: Any) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        call(*args)
    assert status_of(info.value).http_status == 403
    assert status_of(info.value).grpc_code == "PERMISSION_DENIED"
    assert info.value.reason == "insufficient_scope"
    return info.value


async def test_good_token_becomes_principal(auth: Any, issuer: TestIssuer) -> None:
    principal = await auth[0].authenticate(bearer(issuer.token(scope="compute.read compute.create")))
    assert principal.issuer == ISS
    assert principal.subject == "alice"
    assert principal.scopes == {"compute.read", "compute.create"}
    assert principal.groups == {"/dune"}
    assert principal.expires_at is not None


@pytest.mark.parametrize("profile", ["scitokens", "oidc"])
async def test_other_profiles(make_auth: Any, router: Any, profile: str) -> None:
    other = TestIssuer("https://other.test", profile=profile)
    router.get(other.jwks_uri).respond(json=other.jwks())
    authn, authz = make_auth(AuthSettings(issuers=[other.settings()]))
    principal = await authn.authenticate(bearer(other.token()))
    authz.authorize_infer(principal, "m")
    assert principal.groups == ({"dune"} if profile == "oidc" else set())
    if profile == "scitokens":
        with pytest.raises(TokenRejected) as info:
            await authn.authenticate(bearer(other.token(ver="scitokens:1.0")))
        assert info.value.detail == "unsupported_version"
    else:
        principal = await authn.authenticate(bearer(other.token(scope="", scp=["compute.read"])))
        assert principal.scopes == {"compute.read"}


def test_infer_needs_the_issuers_required_scopes(auth: Any) -> None:
    authz = auth[1]
    authz.authorize_infer(Principal(ISS, "a", frozenset({"compute.read"})), "m")
    error = denied(authz.authorize_infer, Principal(ISS, "a", frozenset({"compute.create"})), "m")
    assert error.detail == "missing_scope"
    assert "compute.read" in error.message


@pytest.mark.parametrize("scope", ["compute.read:/dune", "compute", "COMPUTE.READ", "compute.rea"])
def test_scopes_match_exactly(auth: Any, scope: str) -> None:
    assert (
        denied(auth[1].authorize_infer, Principal(ISS, "a", frozenset({scope})), "m").detail
        == "missing_scope"
    )


def test_unknown_issuer_principal_is_denied(auth: Any) -> None:
    error = denied(
        auth[1].authorize_infer, Principal("https://x.test", "a", frozenset({"compute.read"})), "m"
    )
    assert error.detail == "unknown_issuer"


def test_model_groups(auth: Any) -> None:
    authz = auth[1]
    authz.set_model_groups(lambda model: frozenset({"/dune"}) if model == "michel" else None)
    ok = Principal(ISS, "a", frozenset({"compute.read"}), frozenset({"/dune"}))
    authz.authorize_infer(ok, "michel")
    child = Principal(ISS, "a", frozenset({"compute.read"}), frozenset({"/dune/production"}))
    assert denied(authz.authorize_infer, child, "michel").detail == "group_not_allowed"
    none = Principal(ISS, "a", frozenset({"compute.read"}))
    authz.authorize_infer(none, "unrestricted")
    authz.model_groups = lambda model: frozenset({"/dune/production"})
    assert denied(authz.authorize_infer, ok, "michel").detail == "group_not_allowed"  # no parent inference


def test_admin(make_auth: Any, issuer: TestIssuer) -> None:
    _, authz = make_auth(AuthSettings(issuers=[issuer.settings()], admin_groups=["/sonic/admins"]))
    authz.authorize_admin(Principal(ISS, "a", frozenset({"gateway.admin"})))
    authz.authorize_admin(Principal(ISS, "a", groups=frozenset({"/sonic/admins"})))
    for p in (
        Principal(ISS, "a", frozenset({"compute.read"}), frozenset({"/sonic"})),
        Principal(ISS, "a", groups=frozenset({"/sonic/admins/x"})),
    ):
        assert denied(authz.authorize_admin, p).detail == "not_admin"


async def test_cached_token_skips_validation(
    auth: Any, issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    authn = auth[0]
    token = issuer.token()
    first = await authn.authenticate(bearer(token))

    async def boom(token: str) -> Any:
        raise AssertionError("validated again")

    monkeypatch.setattr(authn.validator, "validate", boom)
    assert await authn.authenticate(bearer(token)) is first


async def test_cache_entry_ends_with_the_token(make_auth: Any, issuer: TestIssuer, serve_jwks: Any) -> None:
    import time

    from .conftest import FakeClock

    wall = FakeClock(time.time())
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()]), clock=wall)
    token = issuer.token(exp=int(wall.now) + 100)
    await authn.authenticate(bearer(token))
    wall.advance(100 + 61)
    with pytest.raises(TokenRejected) as info:
        await authn.authenticate(bearer(token))
    assert info.value.detail == "expired"


async def test_cache_is_bounded(make_auth: Any, issuer: TestIssuer, serve_jwks: Any) -> None:
    authn, _ = make_auth(AuthSettings(issuers=[issuer.settings()], token_cache_size=3))
    for i in range(6):
        await authn.authenticate(bearer(issuer.token(jti=f"j{i}")))
    assert len(authn._cache) == 3


async def test_metrics(auth: Any, issuer: TestIssuer, registry: CollectorRegistry) -> None:
    authn = auth[0]
    token = issuer.token()
    await authn.authenticate(bearer(token))
    await authn.authenticate(bearer(token))
    with pytest.raises(TokenRejected):
        await authn.authenticate(bearer(issuer.token(aud="https://x.test")))
    with pytest.raises(TokenRejected):
        await authn.authenticate(bearer(issuer.token(iss="https://attacker-chosen-\u2028label.test")))
    with pytest.raises(TokenRejected):
        await authn.authenticate(None)

    def value(**labels: str) -> float | None:
        return registry.get_sample_value("sonic_gateway_token_validations_total", labels)

    assert value(issuer=ISS, outcome="accepted", reason="validated") == 1
    assert value(issuer=ISS, outcome="accepted", reason="cached") == 1
    assert value(issuer=ISS, outcome="rejected", reason="wrong_audience") == 1
    assert value(issuer="unknown", outcome="rejected", reason="unknown_issuer") == 1
    assert value(issuer="unknown", outcome="rejected", reason="missing_token") == 1
    issuers = {s.labels["issuer"] for m in registry.collect() for s in m.samples}
    assert issuers <= {ISS, "unknown"}


async def test_a_quiet_refusal_is_not_counted_twice(
    auth: Any, issuer: TestIssuer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Envoy's verdict request is quiet: the request it refuses is counted and logged by the Python
    path that then answers it, once."""
    authn = auth[0]
    wrong = bearer(issuer.token(aud="https://x.test"))
    with caplog.at_level("INFO", logger="gateway.auth"), pytest.raises(TokenRejected) as quiet:
        await authn.authenticate(wrong, quiet=True)
    assert quiet.value.detail == "wrong_audience"  # the same verdict, only not recorded
    labels = {"issuer": ISS, "outcome": "rejected", "reason": "wrong_audience"}
    assert registry.get_sample_value("sonic_gateway_token_validations_total", labels) is None
    assert not [r for r in caplog.records if "rejected" in r.getMessage()]
    with pytest.raises(TokenRejected):
        await authn.authenticate(wrong)
    assert registry.get_sample_value("sonic_gateway_token_validations_total", labels) == 1


async def test_disabled_auth_is_allow_all() -> None:
    authn, authz = build_auth(AuthSettings(enabled=False), registry=CollectorRegistry())
    assert isinstance(authn, AllowAllAuthenticator)
    assert isinstance(authz, AllowAllAuthorizer)


async def test_build_auth_twice_on_one_registry(registry: CollectorRegistry, issuer: TestIssuer) -> None:
    for _ in range(2):
        authn, _ = build_auth(AuthSettings(issuers=[issuer.settings()]), registry=registry)
        await authn.aclose()  # type: ignore[attr-defined]


def test_www_authenticate() -> None:
    error = Unauthenticated('bad "token"\\ here\r\nSet-Cookie: x=1\x00é', "invalid_token")
    value = www_authenticate(error)
    assert (
        value
        == 'Bearer error="invalid_token", error_description="bad \\"token\\"\\\\ here  Set-Cookie: x=1??"'
    )
    assert "\r" not in value
    assert "\n" not in value
    denied_value = www_authenticate(PermissionDenied("needs compute.read"), realm="sonic")
    assert (
        denied_value
        == 'Bearer realm="sonic", error="insufficient_scope", error_description="needs compute.read"'
    )
    assert www_authenticate(None) == "Bearer"
    missing = TokenRejected("missing_token", "send a token", reason="invalid_request")
    assert www_authenticate(missing).startswith('Bearer error="invalid_request"')


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"issuer": "http://issuer.example.org", "audience": ["a"]}, "plain http"),
        ({"issuer": "http://issuer.example.org", "audience": ["a"], "insecure": True}, "loopback"),
        ({"issuer": "https://i.test", "audience": ["a"], "jwks_uri": "http://i.test/k"}, "plain http"),
        ({"issuer": "https://i.test", "audience": ["a"], "algorithms": ["HS256"]}, "not allowed"),
        ({"issuer": "https://i.test", "audience": ["a"], "algorithms": ["none"]}, "not allowed"),
        ({"issuer": "https://i.test"}, "audience"),
        ({"issuer": "i.test", "audience": ["a"]}, "https"),
        ({"issuer": "https://i.test", "audience": ["a"], "typo": 1}, "typo"),
    ],
)
def test_issuer_settings_refused(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        load_settings(auth={"issuers": [entry]})


def test_dev_issuer_next_to_real_issuers_needs_the_flag() -> None:
    real = {"issuer": "https://i.test", "audience": ["a"]}
    with pytest.raises(ConfigError, match="allow_dev_issuer_with_real_issuers"):
        load_settings(auth={"issuers": [real], "dev_issuer": {"enabled": True}})
    ok = load_settings(
        auth={"issuers": [real], "dev_issuer": {"enabled": True}, "allow_dev_issuer_with_real_issuers": True}
    )
    assert ok.auth.dev_issuer.enabled
    assert load_settings(auth={"dev_issuer": {"enabled": True}}).auth.dev_issuer.enabled


def test_duplicate_issuers_refused() -> None:
    real = {"issuer": "https://i.test", "audience": ["a"]}
    with pytest.raises(ConfigError, match="more than once"):
        load_settings(auth={"issuers": [real, real]})


def test_groups_claim_defaults() -> None:
    assert IssuerSettings(issuer="https://i.test", audience=["a"]).effective_groups_claim == "wlcg.groups"
    assert (
        IssuerSettings(issuer="https://i.test", audience=["a"], profile="oidc").effective_groups_claim
        == "groups"
    )
    assert (
        IssuerSettings(issuer="https://i.test", audience=["a"], profile="scitokens").effective_groups_claim
        is None
    )
