"""Findings of the performance work that a refactoring could silently undo (no timing asserted)."""

from __future__ import annotations

import asyncio
import socket

from gateway.app import _listen_socket
from gateway.backends.grpc_pool import channel_options


async def test_http_listener_connections_have_nagle_off() -> None:
    # asyncio sets TCP_NODELAY only when the socket's proto is IPPROTO_TCP; without it every
    # KServe response waited ~40 ms for the client's delayed ACK (benchmarks scenario "http").
    sock = _listen_socket("127.0.0.1:0")
    port = sock.getsockname()[1]
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted = transport.get_extra_info("socket")
            seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(seen, 5) != 0
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_backend_channels_leave_retries_to_the_data_plane() -> None:
    # grpc-core retries would buffer a copy of every (15.6 MB) request for a retry never made.
    options = dict(channel_options(1 << 20))
    assert options["grpc.enable_retries"] == 0
    assert options["grpc.max_send_message_length"] == 1 << 20
