"""An HTTP/3 server whose first answer to every new client is a stateless HelloRetryRequest.

Run from the top of a clone once ``.venv`` holds the package (``./serve`` and ``./run-tests``
make it; or ``python3 -m venv .venv && .venv/bin/pip install -e '.[quic]'``): the package is
installed there, not next to the script, so a bare ``python`` does not find it.

    .venv/bin/python examples/quic_server.py
    gtlsclient --exit-on-all-streams-close 127.0.0.1 PORT https://localhost:PORT/

``gtlsclient`` is ngtcp2's HTTP/3 client (Debian: ngtcp2-client); without
``--exit-on-all-streams-close`` it waits for its 30 s idle timeout before it exits.

It runs the QUIC server inside an ordinary asyncio program, next to a task of its own (here, one
that prints the front's counters every ten seconds), prints ``listening on 127.0.0.1:PORT`` and
the certificate's SPKI pin (for ``chromium --origin-to-force-quic-on=localhost:PORT
--ignore-certificate-errors-spki-list=PIN``), then one log line per connection; Ctrl-C stops it.
Options: a port number, ``--validation hrr|retry|both|none``, and ``--once`` (serve a single
connection, then exit).  tests/peers/test_quic_example.py runs the commands above as they are
written here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from stateless13 import ServerConfig
from stateless13.transports.common import ConnectionReport
from stateless13.transports.quic_front import QuicOptions, Validation
from stateless13.transports.quic_server import (
    QuicServer,
    serve_quic,
    spki_pin,
)


async def print_counters(server: QuicServer, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        stats = server.stats
        print(
            f"front: {stats.hrr_sent} HRRs, {stats.retry_sent} Retries, {stats.accepted} accepted,"
            f" {server.connections} connections open",
            flush=True,
        )


async def main(port: int, validation: Validation, once: bool) -> None:
    config = ServerConfig.self_signed("localhost", alpn_protocols=(b"h3",))
    done = asyncio.Event()

    def on_report(report: ConnectionReport) -> None:
        if once:
            done.set()

    server = await serve_quic(
        config,
        "127.0.0.1",
        port,
        validation=validation,
        options=QuicOptions(handshake_timeout=10),
        on_report=on_report,
    )
    host, bound = server.address
    print(f"listening on {host}:{bound} (UDP, HTTP/3, validation={validation.value})", flush=True)
    print(f"SPKI pin {spki_pin(config.credentials[0])}", flush=True)
    counters = asyncio.create_task(print_counters(server, 10.0))
    async with server:
        if once:
            await done.wait()
        else:
            await server.serve_forever()
    counters.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("quic", "http3"):  # aioquic's own per-connection chatter
        logging.getLogger(name).setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--validation", choices=[v.value for v in Validation], default="hrr")
    parser.add_argument("--once", action="store_true")
    arguments = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the way to stop it
        asyncio.run(main(arguments.port, Validation(arguments.validation), arguments.once))
