from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import respx

from sonic_client import (
    DiscoveredToken,
    FileToken,
    OAuth2TokenProvider,
    StaticToken,
    TokenNotFoundError,
    TokenRefreshError,
    discover_token,
    token_expiry,
)

UID = 4242
ENDPOINT = "https://idp.example.org/token"


def jwt(exp: float) -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none'})}.{b64({'exp': int(exp), 'sub': 'job'})}.sig"


def test_discovery_order(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    (xdg / f"bt_u{UID}").write_text("from-xdg\n")
    f = tmp_path / "tokfile"
    f.write_text("  from-file \n")
    env = {"BEARER_TOKEN": "from-env", "BEARER_TOKEN_FILE": str(f), "XDG_RUNTIME_DIR": str(xdg)}
    assert discover_token(env, UID) == "from-env"
    del env["BEARER_TOKEN"]
    assert discover_token(env, UID) == "from-file"
    del env["BEARER_TOKEN_FILE"]
    assert discover_token(env, UID) == "from-xdg"
    env["BEARER_TOKEN"] = "   "  # empty values are skipped, not used
    assert discover_token(env, UID) == "from-xdg"


def test_discovery_falls_back_to_tmp(tmp_path: Path) -> None:
    uid = 900000 + os.getpid() % 10000  # a uid no real /tmp/bt_u file belongs to
    path = Path(f"/tmp/bt_u{uid}")
    path.write_text("from-tmp")
    try:
        env = {"BEARER_TOKEN_FILE": str(tmp_path / "missing"), "XDG_RUNTIME_DIR": str(tmp_path)}
        p = DiscoveredToken(env, uid)
        assert p.get_token() == "from-tmp"
        assert p.source == f"file /tmp/bt_u{uid}"
    finally:
        path.unlink()


def test_not_found_names_every_place(tmp_path: Path) -> None:
    uid = 910000 + os.getpid() % 10000
    env = {"BEARER_TOKEN_FILE": str(tmp_path / "nope"), "XDG_RUNTIME_DIR": str(tmp_path)}
    with pytest.raises(TokenNotFoundError) as info:
        discover_token(env, uid)
    msg = str(info.value)
    assert len(info.value.tried) == 4
    for needle in ("BEARER_TOKEN (unset)", str(tmp_path / "nope"), f"{tmp_path}/bt_u{uid}",
                   f"/tmp/bt_u{uid}"):
        assert needle in msg
    assert isinstance(info.value, LookupError)
    with pytest.raises(TokenNotFoundError) as info2:
        discover_token({}, uid)
    assert "XDG_RUNTIME_DIR unset" in str(info2.value)
    assert "BEARER_TOKEN_FILE unset" in str(info2.value)


def test_file_token_reread_on_change(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("one")
    ft = FileToken(f)
    assert ft.get_token() == "one"
    f.write_text("two-longer")
    assert ft.get_token() == "two-longer"
    # same size, new mtime: an agent rewriting the file in place
    f.write_text("three-abcd")
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert ft.get_token() == "three-abcd"
    f.unlink()
    with pytest.raises(TokenNotFoundError):
        ft.get_token()


def test_static_token_and_repr_never_leaks() -> None:
    t = StaticToken("secret-value")
    assert t.get_token() == "secret-value"
    assert "secret" not in repr(t)
    with pytest.raises(ValueError, match="empty"):
        StaticToken("  ")


def test_token_expiry() -> None:
    assert token_expiry(jwt(1234)) == 1234.0
    assert token_expiry("opaque-token") is None
    assert token_expiry("a.!!!.c") is None


@respx.mock
def test_oauth2_client_credentials_cached_until_expiry() -> None:
    route = respx.post(ENDPOINT).mock(side_effect=[
        httpx.Response(200, json={"access_token": "cc-1", "token_type": "Bearer", "expires_in": 3600}),
        httpx.Response(200, json={"access_token": "cc-2", "token_type": "Bearer", "expires_in": 3600}),
    ])
    p = OAuth2TokenProvider(ENDPOINT, "client-id", "client-secret", scope="compute.read")
    assert p.get_token() == "cc-1"
    assert p.get_token() == "cc-1"  # cached
    assert route.call_count == 1
    body = route.calls[0].request.content.decode()
    assert "grant_type=client_credentials" in body
    assert "scope=compute.read" in body


@respx.mock
def test_oauth2_refreshes_expiring_source_token(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text(jwt(time.time() + 3600))
    route = respx.post(ENDPOINT).mock(return_value=httpx.Response(
        200, json={"access_token": "refreshed", "token_type": "Bearer", "expires_in": 600,
                   "refresh_token": "rt-2"}))
    p = OAuth2TokenProvider(ENDPOINT, "cid", refresh_token="rt-1", source=FileToken(f),
                            min_lifetime=60)
    assert p.get_token() == f.read_text()  # fresh: no grant
    assert route.call_count == 0
    f.write_text(jwt(time.time() + 10))  # about to expire
    assert p.get_token() == "refreshed"
    assert route.call_count == 1
    body = route.calls[0].request.content.decode()
    assert "grant_type=refresh_token" in body
    assert "refresh_token=rt-1" in body
    f.write_text(jwt(time.time() - 5))  # still stale: cached refreshed token, no new request
    assert p.get_token() == "refreshed"
    assert route.call_count == 1


@respx.mock
def test_oauth2_failure_is_clear() -> None:
    respx.post(ENDPOINT).mock(return_value=httpx.Response(
        401, json={"error": "invalid_client"}))
    p = OAuth2TokenProvider(ENDPOINT, "cid", "wrong-secret")
    with pytest.raises(TokenRefreshError) as info:
        p.get_token()
    assert ENDPOINT in str(info.value)
    assert "wrong-secret" not in str(info.value)


def test_file_token_invalidate_rereads_an_unchanged_looking_file(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("token-one")
    ft = FileToken(f)
    assert ft.get_token() == "token-one"
    st = f.stat()
    with f.open("r+") as fh:  # same inode and size; mtime put back below
        fh.write("token-two")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ft.get_token() == "token-one"  # the stamp cannot tell
    ft.invalidate()
    assert ft.get_token() == "token-two"
    d = DiscoveredToken({"BEARER_TOKEN_FILE": str(f)}, UID)
    assert d.get_token() == "token-two"
    with f.open("r+") as fh:
        fh.write("token-333")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    d.invalidate()
    assert d.get_token() == "token-333"


@respx.mock
def test_oauth2_invalidate_after_a_rejection_runs_the_grant(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text(jwt(time.time() + 3600))
    route = respx.post(ENDPOINT).mock(side_effect=[
        httpx.Response(200, json={"access_token": "granted-1", "token_type": "Bearer",
                                  "expires_in": 600}),
        httpx.Response(200, json={"access_token": "granted-2", "token_type": "Bearer",
                                  "expires_in": 600}),
    ])
    p = OAuth2TokenProvider(ENDPOINT, "cid", refresh_token="rt", source=FileToken(f))
    assert p.get_token() == f.read_text()
    p.invalidate()  # the gateway rejected the source's token, which still looks fresh
    assert p.get_token() == "granted-1"
    assert p.get_token() == "granted-1"
    p.invalidate()  # and then the granted one
    assert p.get_token() == "granted-2"
    assert route.call_count == 2
    f.write_text(jwt(time.time() + 7200))  # the agent renewed the file: used again
    assert p.get_token() == f.read_text()
