"""The QUIC server's UDP socket (issue 20): a receive buffer that holds a burst of Initials."""

from __future__ import annotations

import asyncio

from stateless13 import ServerConfig
from stateless13.transports.quic_front import QuicOptions
from stateless13.transports.quic_server import serve_quic

CONFIG = ServerConfig.self_signed(alpn_protocols=(b"h3",))


def test_the_udp_receive_buffer_is_raised() -> None:
    """Issue 20: the kernel's default (208 KiB) lost 64% of a burst of 256 Initials."""

    async def buffer_size(options: QuicOptions) -> int:
        server = await serve_quic(CONFIG, "127.0.0.1", 0, options=options)
        try:
            return server.receive_buffer
        finally:
            server.close()

    default = asyncio.run(buffer_size(QuicOptions()))
    assert default >= 2 * (7 << 20)  # as root (CI): forced; Linux reports twice the size
    assert asyncio.run(buffer_size(QuicOptions(receive_buffer=1 << 20))) == 2 * (1 << 20)
