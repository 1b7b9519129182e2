"""Outbound credentials to facilities (token endpoint mocked with respx)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from gateway.auth.outbound import OutboundCredentials, OutboundCredentialSettings
from gateway.errors import Unavailable

from .conftest import FakeClock

TOKEN_URL = "https://facility.test/token"


async def test_none_and_forward() -> None:
    none = OutboundCredentials(OutboundCredentialSettings())
    assert await none.authorization_for("Bearer client") is None
    forward = OutboundCredentials(OutboundCredentialSettings(kind="forward_client_token"))
    assert await forward.authorization_for("Bearer client") == "Bearer client"
    assert await forward.authorization_for(None) is None


async def test_static_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    creds = OutboundCredentials(OutboundCredentialSettings(kind="file", token_file=str(path)))
    assert await creds.authorization_for("Bearer client") == "Bearer first"
    path.write_text("second-token\n")
    os.utime(path, ns=(1, 1))
    assert await creds.authorization_for(None) == "Bearer second-token"
    path.unlink()
    with pytest.raises(Unavailable):
        await creds.authorization_for(None)


@pytest.mark.parametrize("content", ["", "two words"])
async def test_bad_token_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    creds = OutboundCredentials(OutboundCredentialSettings(kind="file", token_file=str(path)))
    with pytest.raises(Unavailable):
        await creds.authorization_for(None)


def cc_settings(tmp_path: Path, **extra: Any) -> OutboundCredentialSettings:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    return OutboundCredentialSettings(
        kind="client_credentials",
        token_url=TOKEN_URL,
        client_id="gateway",
        client_secret_file=str(secret),
        scope=["compute.read"],
        audience="https://facility.test",
        **extra,
    )


async def test_client_credentials_cached_and_refreshed(router: Any, tmp_path: Path) -> None:
    issued = iter(["tok-1", "tok-2"])
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"access_token": next(issued), "token_type": "Bearer", "expires_in": 300}
        )

    route = router.post(TOKEN_URL).mock(side_effect=answer)
    clock = FakeClock(1000.0)
    async with httpx.AsyncClient() as client:
        creds = OutboundCredentials(cc_settings(tmp_path), http_client=client, clock=clock)
        assert await creds.authorization_for("Bearer client-token") == "Bearer tok-1"
        clock.advance(200)
        assert await creds.authorization_for("Bearer client-token") == "Bearer tok-1"
        assert route.call_count == 1
        clock.advance(50)  # within refresh_margin_s (60) of expiry
        assert await creds.authorization_for(None) == "Bearer tok-2"
    form = parse_qs(seen[0].content.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "scope": ["compute.read"],
        "audience": ["https://facility.test"],
    }
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"gateway:s3cret").decode()
    assert all(b"client-token" not in r.content and "client-token" not in str(r.headers) for r in seen)


async def test_client_credentials_post_auth(router: Any, tmp_path: Path) -> None:
    route = router.post(TOKEN_URL).respond(json={"access_token": "t", "expires_in": 60})
    creds = OutboundCredentials(cc_settings(tmp_path, auth_method="client_secret_post"))
    try:
        assert await creds.authorization_for(None) == "Bearer t"
    finally:
        await creds.aclose()
    form = parse_qs(route.calls[0].request.content.decode())
    assert form["client_id"] == ["gateway"]
    assert form["client_secret"] == ["s3cret"]


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(401, json={"error": "invalid_client"}),
        httpx.Response(200, json={"token_type": "Bearer"}),
        httpx.Response(200, text="<html>"),
    ],
)
async def test_client_credentials_failures(router: Any, tmp_path: Path, response: httpx.Response) -> None:
    router.post(TOKEN_URL).mock(return_value=response)
    async with httpx.AsyncClient() as client:
        creds = OutboundCredentials(cc_settings(tmp_path), http_client=client)
        with pytest.raises(Unavailable) as info:
            await creds.authorization_for(None)
    assert "s3cret" not in info.value.message


async def test_token_endpoint_unreachable(router: Any, tmp_path: Path) -> None:
    router.post(TOKEN_URL).mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as client:
        creds = OutboundCredentials(cc_settings(tmp_path), http_client=client)
        with pytest.raises(Unavailable):
            await creds.authorization_for(None)


@pytest.mark.parametrize(
    "values",
    [
        {"kind": "file"},
        {"kind": "client_credentials", "token_url": TOKEN_URL},
        {
            "kind": "client_credentials",
            "token_url": "http://facility.test/t",
            "client_id": "c",
            "client_secret_file": "f",
        },
    ],
)
def test_settings_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        OutboundCredentialSettings(**values)
