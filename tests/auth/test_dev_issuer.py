"""The development issuer: keys on disk, minted tokens through the real validation path, the CLI."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.auth import TokenRejected
from gateway.auth.cli import add_token_arguments, run_token_command
from gateway.auth.dev_issuer import DevIssuer, DevIssuerError
from gateway.config import AuthSettings, DevIssuerSettings


def dev_settings(tmp_path: Path, **extra: Any) -> DevIssuerSettings:
    return DevIssuerSettings(enabled=True, key_dir=str(tmp_path / "keys" / "dev-issuer"), **extra)


def test_keys_are_created_private(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    dev.ensure_keys()
    assert stat.S_IMODE(dev.key_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(dev.private_key_path.stat().st_mode) == 0o600
    jwks = dev.public_jwks()
    assert [k["kty"] for k in jwks["keys"]] == ["EC"]
    assert "d" not in jwks["keys"][0]
    before = dev.private_key_path.read_bytes()
    DevIssuer(dev_settings(tmp_path)).ensure_keys()  # idempotent: the key stays
    assert dev.private_key_path.read_bytes() == before


def test_world_readable_private_key_is_refused(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    dev.ensure_keys()
    dev.private_key_path.chmod(0o644)
    with pytest.raises(DevIssuerError, match="chmod 600"):
        dev.mint("alice")


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
async def test_minted_tokens_pass_real_validation(make_auth: Any, tmp_path: Path, algorithm: str) -> None:
    settings = AuthSettings(dev_issuer=dev_settings(tmp_path, algorithm=algorithm))
    authn, authz = make_auth(settings)
    dev = DevIssuer(settings.dev_issuer)
    token = dev.mint("alice", ["compute.read"], ["/dune"], 600)
    principal = await authn.authenticate(f"Bearer {token}")
    assert (principal.issuer, principal.subject) == ("https://sonic-gateway.invalid/dev-issuer", "alice")
    assert principal.groups == {"/dune"}
    authz.authorize_infer(principal, "model")
    with pytest.raises(TokenRejected) as info:
        await authn.authenticate(f"Bearer {dev.mint('bob', audience='https://elsewhere.test')}")
    assert info.value.detail == "wrong_audience"


async def test_dev_issuer_regenerated_while_running(make_auth: Any, tmp_path: Path, monotonic: Any) -> None:
    settings = AuthSettings(dev_issuer=dev_settings(tmp_path))
    authn, _ = make_auth(settings)
    dev = DevIssuer(settings.dev_issuer)
    await authn.authenticate(f"Bearer {dev.mint('alice')}")
    dev.private_key_path.unlink()
    dev.jwks_path.unlink()
    monotonic.advance(61)
    assert (await authn.authenticate(f"Bearer {dev.mint('bob')}")).subject == "bob"


def test_mint_limits(tmp_path: Path) -> None:
    dev = DevIssuer(dev_settings(tmp_path))
    with pytest.raises(DevIssuerError):
        dev.mint("alice", lifetime_s=7 * 3600)
    with pytest.raises(DevIssuerError):
        dev.mint("")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_token_arguments(parser)
    return run_token_command(parser.parse_args(argv))


async def test_token_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_auth: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SONIC_GATEWAY_CONFIG", raising=False)
    key_dir = tmp_path / "dev"
    config = tmp_path / "gateway.yaml"
    config.write_text(f"auth:\n  dev_issuer:\n    enabled: true\n    key_dir: {key_dir}\n")
    code = run_cli(
        ["--config", str(config), "--subject", "carol", "--scope", "compute.read", "--group", "/dune"]
    )
    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    token = out.strip()
    assert out == token + "\n"
    assert token.count(".") == 2
    from gateway.config import load_settings

    authn, _ = make_auth(load_settings(config).auth)
    principal = await authn.authenticate(f"Bearer {token}")
    assert (principal.subject, principal.groups) == ("carol", {"/dune"})


def test_token_command_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["--config", str(tmp_path / "missing.yaml")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "does not exist" in err


def test_token_command_warns_when_disabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"auth:\n  dev_issuer:\n    key_dir: {tmp_path / 'dev'}\n")
    assert run_cli(["--config", str(config), "--lifetime", "60"]) == 0
    out, err = capsys.readouterr()
    assert out.count(".") == 2
    assert "warning" in err
