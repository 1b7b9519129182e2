"""Prometheus metrics on their own port, never on the public data port.

The gateway's own series and, with the Envoy data plane, Envoy's statistics (read from its loopback
admin interface at scrape time, ``envoy_`` prefixed as Envoy names them) in one scrape.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway.config import parse_address

log = logging.getLogger(__name__)


class EnvoyStats(Collector):
    """Envoy's /stats/prometheus, re-exposed (Envoy's admin port stays on loopback)."""

    def __init__(self, admin_url: Callable[[], str], timeout_s: float = 2.0) -> None:
        self._admin_url = admin_url
        self._timeout_s = timeout_s

    def collect(self) -> Iterable[Metric]:
        url = self._admin_url()
        if not url:
            return []
        try:
            with urllib.request.urlopen(f"{url}/stats/prometheus", timeout=self._timeout_s) as answer:  # noqa: S310 - loopback admin
                text = answer.read().decode("utf-8", "replace")
        except OSError as exc:  # Envoy restarting: this scrape lacks its series, the next has them
            log.warning("envoy statistics not scraped: %s", exc)
            return []
        return list(text_string_to_metric_families(text))


class _Merged(Collector):
    def __init__(self, sources: Iterable[Collector]) -> None:
        self._sources = list(sources)

    def collect(self) -> Iterable[Metric]:
        for source in self._sources:
            yield from source.collect()


class _SharedPortServer(ThreadingMixIn, WSGIServer):
    # --workers N: every worker listens on the metrics port; whichever answers a scrape reports all
    # workers' values (multiprocess mode) plus its own live gauges.
    allow_reuse_port = True
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class MetricsEndpoint:
    def __init__(self, address: str, sources: Iterable[Collector]) -> None:
        self.address = address
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Merged(sources))
        self.port = 0
        self._server: WSGIServer | None = None

    def start(self) -> None:
        host, port = parse_address(self.address)
        self._server = make_server(
            host, port, make_wsgi_app(self.registry), _SharedPortServer, handler_class=_Quiet
        )
        self.port = int(self._server.server_port)
        # shutdown() waits for the loop's next poll: 0.1 s, not the default 0.5 s, keeps a stop prompt
        # (10 idle wake-ups a second cost the thread nothing measurable).
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="metrics", daemon=True
        ).start()
        log.info("metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
