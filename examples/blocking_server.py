"""A blocking, thread-per-connection server behind the stateless HelloRetryRequest front.

Run from the top of a clone once ``.venv`` holds the package (``./serve`` and ``./run-tests``
make it; or ``python3 -m venv .venv && .venv/bin/pip install -e '.[quic]'``): the package is
installed there, not next to the script, so a bare ``python`` does not find it.

    .venv/bin/python examples/blocking_server.py
    curl -k --tlsv1.3 https://127.0.0.1:PORT/

It prints ``listening on 127.0.0.1:PORT`` (a free port; give one as an argument to choose it),
and answers each request with one line saying what was negotiated; Ctrl-C stops it.  ``--once``
serves a single connection and exits.  tests/peers/test_examples_tcp.py runs the commands above as
they are written here.
"""

from __future__ import annotations

import logging
import sys
import threading

from stateless13 import ServerConfig
from stateless13.transports.blocking import BlockingTLSStream, serve


def main(port: int, once: bool) -> None:
    config = ServerConfig.self_signed("localhost", alpn_protocols=(b"http/1.1",))
    served = threading.Event()

    def handler(stream: BlockingTLSStream) -> None:
        stream.recv()  # the request; one read is enough for this demo
        info = stream.handshake
        body = (
            f"hello over {info.cipher_suite.name} with {info.key_exchange}; "
            f"cookie verified: {info.cookie_verified}\n"
        ).encode()
        stream.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        stream.close()
        served.set()

    # "hrr": every client gets the stateless HelloRetryRequest, so that each connection shows
    # it; the default, "adaptive", sends it only while many handshakes are in progress.
    server = serve(config, handler, "127.0.0.1", port, validation="hrr")
    print(f"listening on {server.server_address[0]}:{server.server_address[1]}", flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        if once:
            served.wait()
        else:
            thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = [a for a in sys.argv[1:] if a != "--once"]
    main(int(arguments[0]) if arguments else 0, "--once" in sys.argv)
