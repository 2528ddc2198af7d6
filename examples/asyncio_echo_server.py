"""An asyncio echo server behind the stateless HelloRetryRequest front.

Run from the top of a clone once ``.venv`` holds the package (``./serve`` and ``./run-tests``
make it; or ``python3 -m venv .venv && .venv/bin/pip install -e '.[quic]'``): the package is
installed there, not next to the script, so a bare ``python`` does not find it.

    .venv/bin/python examples/asyncio_echo_server.py
    openssl s_client -connect 127.0.0.1:PORT -tls1_3      # type a line: it comes back

It prints ``listening on 127.0.0.1:PORT`` (a free port; give one as an argument to choose it),
then a line per connection; Ctrl-C stops it.  ``--once`` serves a single connection and exits.
tests/peers/test_examples_tcp.py runs the commands above as they are written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from stateless13 import ServerConfig
from stateless13.transports.asyncio_tcp import TLSStream, serve


async def echo(stream: TLSStream) -> None:
    print(
        f"{stream.peer[0]}:{stream.peer[1]} connected: {stream.handshake.cipher_suite.name}, "
        f"{stream.handshake.key_exchange}, cookie verified: {stream.handshake.cookie_verified}",
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

    # "hrr": every client gets the stateless HelloRetryRequest, so that each connection shows
    # it; the default, "adaptive", sends it only while many handshakes are in progress.
    server = await serve(config, handler, "127.0.0.1", port, validation="hrr")
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        if once:
            await done.wait()
        else:
            await server.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = [a for a in sys.argv[1:] if a != "--once"]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the way to stop it
        asyncio.run(main(int(arguments[0]) if arguments else 0, "--once" in sys.argv))
