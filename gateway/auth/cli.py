"""``sonic-gateway token``: mint a token from the development issuer; prints only the token."""

from __future__ import annotations

import argparse
import sys

from gateway.auth.dev_issuer import DevIssuer, DevIssuerError
from gateway.config import ConfigError, load_settings


def add_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", default="dev-user", help="the token's 'sub' (default: dev-user)")
    parser.add_argument(
        "--scope",
        action="append",
        default=None,
        help="a scope to include (repeatable; default: auth.dev_issuer.default_scopes)",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=None,
        help="a group to assert, e.g. /dune (repeatable; default: auth.dev_issuer.default_groups)",
    )
    parser.add_argument(
        "--lifetime", type=float, default=None, help="seconds until expiry (default: from the config)"
    )
    parser.add_argument("--audience", default=None, help="the 'aud' claim (default: first dev audience)")
    parser.add_argument("--config", default=None, help="gateway YAML config (or $SONIC_GATEWAY_CONFIG)")


def run_token_command(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"sonic-gateway token: {exc}", file=sys.stderr)
        return 2
    dev = settings.auth.dev_issuer
    if not dev.enabled:
        print(
            "sonic-gateway token: warning: auth.dev_issuer.enabled is false in this configuration; "
            "a gateway using it will reject this token",
            file=sys.stderr,
        )
    scopes = dev.default_scopes if args.scope is None else args.scope
    groups = dev.default_groups if args.group is None else args.group
    lifetime = dev.default_lifetime_s if args.lifetime is None else args.lifetime
    try:
        token = DevIssuer(dev).mint(args.subject, scopes, groups, lifetime, args.audience)
    except (DevIssuerError, OSError) as exc:
        print(f"sonic-gateway token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
