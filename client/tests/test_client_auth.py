"""401 / UNAUTHENTICATED: the token source is re-read once and the call retried once; a token that
has already expired is never sent."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import respx

from sonic_client import (
    AsyncClient,
    Client,
    FileToken,
    InferenceError,
    RetryPolicy,
    StaticToken,
    TokenExpiredError,
)
from sonic_client._cli import main

FakeTriton = Any  # the fixture type lives in conftest.py (not importable as a module)
X = np.ones((2, 48, 48, 1), dtype=np.float32)
NOW = 1_700_000_000.0
BASE = "http://127.0.0.1:18001"


def jwt(exp: float, sub: str = "job") -> str:
    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    return f"{b64({'alg': 'none'})}.{b64({'exp': int(exp), 'sub': sub})}.sig"


def renew_on_rejection(path: Path, new: str) -> Any:
    """An on_infer hook: the first request with a token other than ``new`` is answered 401 while
    the token agent writes ``new`` to ``path`` (the token expired in flight)."""
    def hook(md: dict[str, str]) -> grpc.StatusCode | None:
        if md.get("authorization") != f"Bearer {new}":
            path.write_text(new + "\n")
            return grpc.StatusCode.UNAUTHENTICATED
        return None
    return hook


def test_401_rereads_the_token_file_and_retries_once(fake_triton: FakeTriton,
                                                      tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("old-token\n")
    fake_triton.on_infer = renew_on_rejection(tok, "good-token")
    with Client(fake_triton.url, token=FileToken(tok), retry=RetryPolicy.none()) as c:
        out = c.infer("emtrack_michel", {"main_input": X})
    np.testing.assert_array_equal(out["identity"], X)
    assert [md["authorization"] for md in fake_triton.metadata] == [
        "Bearer old-token", "Bearer good-token"]
    assert len({md["x-request-id"] for md in fake_triton.metadata}) == 1  # the same request


def test_401_rereads_a_file_renewed_with_the_same_stamp(fake_triton: FakeTriton,
                                                        tmp_path: Path) -> None:
    """A renewed token of the same length written within the file system's mtime resolution
    looks unchanged (mtime, size, inode): the 401 makes the client read the file anyway."""
    tok = tmp_path / "tok"
    tok.write_text("token-one")
    stamp = tok.stat()

    def hook(md: dict[str, str]) -> grpc.StatusCode | None:
        if md["authorization"] == "Bearer token-one":
            with tok.open("r+") as f:  # same inode, same size
                f.write("token-two")
            os.utime(tok, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
            return grpc.StatusCode.UNAUTHENTICATED
        return None

    fake_triton.on_infer = hook
    with Client(fake_triton.url, token=FileToken(tok), retry=RetryPolicy.none()) as c, \
            pytest.raises(InferenceError, match="UNAUTHENTICATED"):
        c.infer("emtrack_michel", {"main_input": X})  # the fake accepts only good-token
    assert [md["authorization"] for md in fake_triton.metadata] == [
        "Bearer token-one", "Bearer token-two"]


def test_401_with_the_same_token_is_not_retried(fake_triton: FakeTriton) -> None:
    with Client(fake_triton.url, token="bad", retry=RetryPolicy.none()) as c, \
            pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": X})
    assert info.value.code == "UNAUTHENTICATED"
    assert info.value.attempts == fake_triton.calls == 1
    assert "re-read explicit token: it still holds the rejected token" in str(info.value)
    assert "Bearer bad" not in str(info.value)


def test_401_is_retried_only_once(fake_triton: FakeTriton, tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("token-0")
    rejected = 0

    def hook(md: dict[str, str]) -> grpc.StatusCode:
        nonlocal rejected
        rejected += 1
        tok.write_text(f"token-{rejected}")  # renewed every time, rejected every time
        return grpc.StatusCode.UNAUTHENTICATED

    fake_triton.on_infer = hook
    with Client(fake_triton.url, token=FileToken(tok)) as c, pytest.raises(InferenceError) as info:
        c.infer("emtrack_michel", {"main_input": X})
    assert info.value.code == "UNAUTHENTICATED"
    assert fake_triton.calls == info.value.attempts == 2
    assert [md["authorization"] for md in fake_triton.metadata] == [
        "Bearer token-0", "Bearer token-1"]


async def test_async_401_rereads_and_retries_once(fake_triton: FakeTriton, tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("old-token\n")
    fake_triton.on_infer = renew_on_rejection(tok, "good-token")
    async with AsyncClient(fake_triton.url, token=FileToken(tok)) as c:
        out = await c.infer("emtrack_michel", {"main_input": X})
    assert out.stats.retries == 1
    assert fake_triton.metadata[-1]["authorization"] == "Bearer good-token"


def test_http_401_rereads_and_retries_once(tmp_path: Path) -> None:
    tok = tmp_path / "tok"
    tok.write_text("old-token")
    seen: list[str] = []

    def ready(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] != "Bearer new-token":
            tok.write_text("new-token")
            return httpx.Response(401, json={"error": "token expired"},
                                  headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"name": "triton"})

    with respx.mock(base_url=BASE) as router:
        router.get("/v2").mock(side_effect=ready)
        with Client(BASE, token=FileToken(tok)) as c:
            assert c.server_metadata()["name"] == "triton"
    assert seen == ["Bearer old-token", "Bearer new-token"]


def test_expired_token_is_refused_before_sending(fake_triton: FakeTriton) -> None:
    token = jwt(NOW - 120)
    with Client(fake_triton.url, token=token, wall_clock=lambda: NOW) as c, \
            pytest.raises(TokenExpiredError) as info:
        c.infer("emtrack_michel", {"main_input": X})
    assert fake_triton.calls == 0
    msg = str(info.value)
    assert "the bearer token from explicit token expired 120 s ago" in msg
    assert "(exp 2023-11-14 22:11:20 UTC)" in msg
    assert token not in msg
    assert info.value.age == 120.0
    # expiring exactly now is expired; one second left is still sent
    with Client(fake_triton.url, token=StaticToken(jwt(NOW)), wall_clock=lambda: NOW) as c, \
            pytest.raises(TokenExpiredError):
        c.infer("emtrack_michel", {"main_input": X})
    with Client(fake_triton.url, token=jwt(NOW + 1), wall_clock=lambda: NOW) as c, \
            pytest.raises(InferenceError, match="UNAUTHENTICATED"):
        c.infer("emtrack_michel", {"main_input": X})  # sent: the fake only accepts good-token
    assert fake_triton.calls == 1


def test_expired_token_file_is_reread_once_before_refusing(fake_triton: FakeTriton,
                                                           tmp_path: Path) -> None:
    """The file looks unchanged but was renewed: the expiry check re-reads it before refusing."""
    tok = tmp_path / "tok"
    old, new = jwt(NOW - 5, "aaaa"), jwt(NOW + 3600, "bbbb")
    assert len(old) == len(new)
    tok.write_text(old)
    provider = FileToken(tok)
    assert provider.get_token() == old
    stamp = tok.stat()
    with tok.open("r+") as f:
        f.write(new)
    os.utime(tok, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with Client(fake_triton.url, token=provider, wall_clock=lambda: NOW,
                retry=RetryPolicy.none()) as c, pytest.raises(InferenceError, match="UNAUTH"):
        c.infer("emtrack_michel", {"main_input": X})
    assert fake_triton.metadata[0]["authorization"] == f"Bearer {new}"


def test_cli_token_exits_nonzero_on_an_expired_token(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    token = jwt(NOW - 30)
    monkeypatch.setenv("BEARER_TOKEN", token)
    assert main(["token"], wall_clock=lambda: NOW) == 1
    captured = capsys.readouterr()
    assert "expired 30 s ago" in captured.err
    assert "environment variable BEARER_TOKEN" in captured.err
    assert token not in captured.out + captured.err
    monkeypatch.setenv("BEARER_TOKEN", jwt(NOW + 600))
    assert main(["token"], wall_clock=lambda: NOW) == 0
    assert "expires in 600 s" in capsys.readouterr().out
