"""HAProxy 2.6 as the peer the gateway is compared against: config generation and the process.

gRPC needs ``mode http`` with ``proto h2`` on the bind and on every server line (HTTP/2 end to end,
no TLS); the KServe REST path is plain HTTP/1.1 in ``mode http``. No auth: HAProxy only balances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

HAPROXY_BIN = "/usr/sbin/haproxy"  # Debian's haproxy 2.6
Balance = Literal["leastconn", "roundrobin"]
Proto = Literal["grpc", "http"]


@dataclass(frozen=True)
class Frontend:
    name: str
    port: int
    proto: Proto
    balance: Balance
    servers: tuple[str, ...]  # host:port of each backend

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError(f"HAProxy frontend {self.name!r} needs at least one server")
        if not self.name.replace("_", "").isalnum():
            raise ValueError(f"HAProxy section name {self.name!r} must be alphanumeric (underscores ok)")


# HAProxy advertises a 64 KiB HTTP/2 window by default: a 15.6 MB request then waits for hundreds of
# WINDOW_UPDATE round trips. A tuned peer is the honest comparison, so the window is raised.
H2_WINDOW = 4 * 1024 * 1024


def render_config(
    frontends: Sequence[Frontend],
    *,
    nbthread: int | None = None,
    timeout_s: int = 300,
    h2_window: int | None = H2_WINDOW,
) -> str:
    """The text of an haproxy.cfg with one frontend/backend pair per entry of ``frontends``."""
    if not frontends:
        raise ValueError("at least one frontend is needed")
    lines = ["global", "    maxconn 4096"]
    if nbthread is not None:
        lines.append(f"    nbthread {nbthread}")
    if h2_window is not None:
        lines.append(f"    tune.h2.initial-window-size {h2_window}")
    lines += [
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        f"    timeout client {timeout_s}s",
        f"    timeout server {timeout_s}s",
        "",
    ]
    for fe in frontends:
        h2 = " proto h2" if fe.proto == "grpc" else ""
        lines += [
            f"frontend {fe.name}",
            f"    bind 127.0.0.1:{fe.port}{h2}",
            f"    default_backend {fe.name}_servers",
            "",
            f"backend {fe.name}_servers",
            f"    balance {fe.balance}",
        ]
        for i, server in enumerate(fe.servers):
            lines.append(f"    server s{i} {server}{h2} maxconn 1000")
        lines.append("")
    return "\n".join(lines)
