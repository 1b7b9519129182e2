"""The catalog's subcommands of ``sonic-gateway``: ``db upgrade`` and ``apply``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8000"


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.catalog.migrate import MigrationsNotFound, upgrade_url
    from gateway.config import load_settings

    settings = load_settings(args.config)
    url = args.database_url or settings.database_url
    try:
        revision = upgrade_url(url)
    except (MigrationsNotFound, SQLAlchemyError) as exc:
        print(f"sonic-gateway db upgrade: {exc}", file=sys.stderr)
        return 2
    print(f"catalog database at revision {revision}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from gateway.catalog.apply import ApplyError, apply_files

    token = args.token or os.environ.get("BEARER_TOKEN")
    try:
        report = asyncio.run(apply_files(args.files, args.url, token, prune=args.prune))
    except ApplyError as exc:
        print(f"sonic-gateway apply: {exc}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(line)
    print(report.summary())
    return 0


def add_catalog_commands(sub: Any) -> None:
    """Register ``db upgrade`` and ``apply`` on the ``sonic-gateway`` subparsers."""
    db = sub.add_parser("db", help="catalog database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply the catalog migrations (to the newest schema)")
    upgrade.add_argument("--config", help="YAML configuration file (default: $SONIC_GATEWAY_CONFIG)")
    upgrade.add_argument("--database-url", help="override database_url from the configuration")
    upgrade.set_defaults(func=cmd_db_upgrade)

    apply = sub.add_parser(
        "apply",
        help="register datasets, models, facilities, backends and deployments from YAML files (idempotent)",
    )
    apply.add_argument(
        "files", nargs="+", metavar="FILE", help="facility descriptors, e.g. facilities/*.yaml"
    )
    apply.add_argument(
        "--prune", action="store_true", help="delete what the files omit (what usage records name is kept)"
    )
    apply.add_argument(
        "--url", default=DEFAULT_URL, help=f"the gateway's HTTP address (default {DEFAULT_URL})"
    )
    apply.add_argument("--token", help="admin bearer token (default: $BEARER_TOKEN)")
    apply.set_defaults(func=cmd_apply)
