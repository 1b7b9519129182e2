"""A gateway with its Envoy data plane in front of the real Tritons, and a loopback token issuer."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.core.recording import InMemoryRecorder
from gateway.triton.launcher import TritonServer
from tests.auth.helpers import AUDIENCE, TestIssuer
from tests.conftest import gateway_settings


@contextmanager
def serving_jwks(issuer: TestIssuer) -> Iterator[str]:
    """Serve ``issuer``'s JWKS on loopback; yields the jwks URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(issuer.jwks()).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()


def envoy_gateway(
    tritons: list[TritonServer], jwks_uri: str, issuer: TestIssuer, **overrides: Any
) -> tuple[Gateway, InMemoryRecorder]:
    auth = {
        "issuers": [
            {
                "issuer": issuer.issuer,
                "profile": issuer.profile,
                "audience": [AUDIENCE],
                "jwks_uri": jwks_uri,
                "insecure": True,
                "required_scopes": ["compute.read"],
            }
        ]
    }
    values: dict[str, Any] = {"auth": auth, "envoy": {"enabled": True, "sync_interval_s": 0.1}}
    values.update(overrides)
    recorder = InMemoryRecorder()
    gateway = Gateway(
        gateway_settings(tritons, **values), recorder=recorder, metrics_registry=CollectorRegistry()
    )
    return gateway, recorder


def envoy_stat(gateway: Gateway, pattern: str) -> int:
    """Sum of Envoy's counters whose names match ``pattern`` (a regex), read from its admin port."""
    assert gateway.envoy is not None
    url = f"{gateway.envoy.process.admin_url}/stats?format=json&filter={pattern}"
    with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback admin
        stats = json.loads(answer.read())["stats"]
    return sum(int(s["value"]) for s in stats if "value" in s)
