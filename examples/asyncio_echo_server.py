"""An asyncio echo server behind the stateless HelloRetryRequest front.

    python examples/asyncio_echo_server.py [PORT]
    openssl s_client -connect 127.0.0.1:PORT -tls1_3      # type a line: it comes back

It prints its port, then one log line per connection.  ``--once`` serves a single connection
and exits (the tests use it).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from stateless13 import ServerConfig
from stateless13.transports.asyncio_tcp import TLSStream, serve


async def echo(stream: TLSStream) -> None:
    print(
        f"{stream.peer[0]}:{stream.peer[1]} connected: {stream.handshake.cipher_suite.name}, "
        f"{stream.handshake.group.name}, cookie verified: {stream.handshake.cookie_verified}",
        flush=True,
    )
    while data := await stream.read():
        stream.write(data)
        await stream.drain()
    await stream.close()


async def main(port: int, once: bool) -> None:
    config = ServerConfig.self_signed("localhost")
    done = asyncio.Event()

    async def handler(stream: TLSStream) -> None:
        await echo(stream)
        if once:
            done.set()

    server = await serve(config, handler, "127.0.0.1", port)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        if once:
            await done.wait()
        else:
            await server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = [a for a in sys.argv[1:] if a != "--once"]
    asyncio.run(main(int(arguments[0]) if arguments else 0, "--once" in sys.argv))
