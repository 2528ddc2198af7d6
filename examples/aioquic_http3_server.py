"""aioquic's HTTP/3 server example on stateless13: one line differs, the import of ``serve``.

Run from the top of a clone once ``.venv`` holds the package (``./serve`` and ``./run-tests``
make it; or ``python3 -m venv .venv && .venv/bin/pip install -e '.[quic]'``):

    .venv/bin/python examples/aioquic_http3_server.py
    gtlsclient --exit-on-all-streams-close 127.0.0.1 4433 https://localhost:4433/

This is aioquic's ``examples/http3_server.py`` (in its sdist) with its ASGI layer reduced to a
page for GET: the same ``HttpServerProtocol(QuicConnectionProtocol)`` over ``H3Connection``,
the same ``QuicConfiguration`` (ALPN, DATAGRAM frames, ``-l`` secrets log, ``-q`` qlog
directory), the same ``SessionTicketStore`` and ``-r`` for a Retry, and ``--host ::`` and
``--port 4433`` by default.  Without ``-c``/``-k`` (aioquic's example requires them) it makes a
self-signed certificate for localhost and prints its SPKI pin for ``chromium
--origin-to-force-quic-on=localhost:4433 --ignore-certificate-errors-spki-list=PIN``.

The one changed line is marked below: put ``from aioquic.asyncio import serve`` back and it runs
on aioquic.  With stateless13's ``serve`` every new client first gets a stateless
HelloRetryRequest (``-r``: a Retry instead, as aioquic), the log shows one line per connection
(``validation=cookie hrr=yes cookie=verified ...``), and a SettingNotHonoured warning says the
ticket store is never called (stateless13's tickets need none).  Ctrl-C stops it.
tests/peers/test_aioquic_serve.py runs the commands above as written (on a free port), fetches
the page with quic-go and Chromium, and runs the file with aioquic's import too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import logging
from typing import Any, TextIO

import aioquic
from aioquic.asyncio import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ProtocolNegotiated, QuicEvent
from aioquic.quic.logger import QuicFileLogger
from aioquic.tls import SessionTicket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stateless13.transports.aioquic_serve import serve  # was: from aioquic.asyncio import serve

SERVER_NAME = "aioquic/" + aioquic.__version__


class HttpServerProtocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http: H3Connection | None = None

    def http_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived) and self._http is not None:
            headers = dict(event.headers)
            method = headers.get(b":method", b"").decode()
            path = headers.get(b":path", b"/").decode()
            status, body = 405, b"method not allowed\n"
            if method == "GET":
                status = 200
                body = (
                    "<!doctype html><title>aioquic</title>"
                    f"<h1>Hello from aioquic's HttpServerProtocol</h1><p>GET {path}</p>\n"
                ).encode()
            self._http.send_headers(
                stream_id=event.stream_id,
                headers=[
                    (b":status", str(status).encode()),
                    (b"server", SERVER_NAME.encode()),
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            self._http.send_data(stream_id=event.stream_id, data=body, end_stream=True)
            self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = H3Connection(self._quic)

        #  pass event to the HTTP layer
        if self._http is not None:
            for http_event in self._http.handle_event(event):
                self.http_event_received(http_event)


class SessionTicketStore:
    """
    Simple in-memory store for session tickets.
    """

    def __init__(self) -> None:
        self.tickets: dict[bytes, SessionTicket] = {}

    def add(self, ticket: SessionTicket) -> None:
        self.tickets[ticket.ticket] = ticket

    def pop(self, label: bytes) -> SessionTicket | None:
        return self.tickets.pop(label, None)


def self_signed(configuration: QuicConfiguration) -> str:
    """A self-signed ECDSA certificate for localhost into ``configuration``; its SPKI pin."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    configuration.certificate, configuration.private_key = certificate, key
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def main(args: argparse.Namespace) -> None:
    # create QUIC logger
    quic_logger = QuicFileLogger(args.quic_log) if args.quic_log else None

    # open SSL log file
    secrets_log_file: TextIO | None = None
    if args.secrets_log:
        secrets_log_file = open(args.secrets_log, "a")  # noqa: SIM115 (open while serving)

    configuration = QuicConfiguration(
        alpn_protocols=H3_ALPN,
        is_client=False,
        max_datagram_frame_size=65536,
        quic_logger=quic_logger,
        secrets_log_file=secrets_log_file,
    )

    # load SSL certificate and key
    if args.certificate:
        configuration.load_cert_chain(args.certificate, args.private_key)
    else:
        print(f"SPKI pin {self_signed(configuration)}", flush=True)

    ticket_store = SessionTicketStore()
    await serve(
        args.host,
        args.port,
        configuration=configuration,
        create_protocol=HttpServerProtocol,
        session_ticket_fetcher=ticket_store.pop,
        session_ticket_handler=ticket_store.add,
        retry=args.stateless_retry,
    )
    print(f"listening on {args.host} port {args.port} (UDP, HTTP/3)", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="QUIC server")
    parser.add_argument("-c", "--certificate", type=str, help="load the TLS certificate")
    parser.add_argument("-k", "--private-key", type=str, help="load the TLS private key")
    parser.add_argument("--host", type=str, default="::", help="listen on (defaults to ::)")
    parser.add_argument("--port", type=int, default=4433, help="defaults to 4433")
    parser.add_argument("-l", "--secrets-log", type=str, help="log secrets (Wireshark)")
    parser.add_argument("-q", "--quic-log", type=str, help="QLOG files into this directory")
    parser.add_argument(
        "-r", "--stateless-retry", action="store_true", help="send a Retry for new connections"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    args = parser.parse_args()

    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        level=logging.DEBUG if args.verbose else logging.INFO,
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the way to stop it
        asyncio.run(main(args))
