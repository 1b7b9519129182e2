"""A gateway whose catalog and HTTP app run in-process (no sockets), with token-name test auth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.config import load_settings
from gateway.core.identity import Principal
from gateway.core.recording import UsageRecorder
from gateway.errors import PermissionDenied, Unauthenticated

ADMIN = {"authorization": "Bearer admin"}
READER = {"authorization": "Bearer reader"}
AUDITOR = {"authorization": "Bearer auditor"}
AUDITORS = "/sonic/auditors"


class TokenNameAuth:
    """``Bearer admin`` is an admin, ``Bearer reader`` (alice) and ``Bearer auditor`` (carol, in the
    group AUDITORS) may only read, anything else is refused."""

    async def authenticate(self, authorization: str | None, *, quiet: bool = False) -> Principal:
        if authorization == "Bearer admin":
            return Principal("https://issuer", "root", scopes=frozenset({"gateway.admin"}))
        if authorization == "Bearer reader":
            return Principal("https://issuer", "alice", scopes=frozenset({"compute.read"}))
        if authorization == "Bearer auditor":
            return Principal("https://issuer", "carol", groups=frozenset({AUDITORS}))
        raise Unauthenticated("no valid bearer token: send 'authorization: Bearer <token>'")

    def authorize_infer(self, principal: Principal, model: str) -> None:
        return None

    def authorize_admin(self, principal: Principal) -> None:
        if "gateway.admin" not in principal.scopes:
            raise PermissionDenied("admin API: the token needs the gateway.admin scope")


def make_gateway(database_url: str, recorder: UsageRecorder | None = None, **overrides: object) -> Gateway:
    values: dict[str, object] = {
        "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "database_url": database_url,
        "routing": {"health_interval_s": 0.1, "probe_timeout_s": 1.0},
    }
    values.update(overrides)
    auth = TokenNameAuth()
    return Gateway(
        load_settings(None, **values),
        authenticator=auth,
        authorizer=auth,
        recorder=recorder,
        metrics_registry=CollectorRegistry(),
    )
