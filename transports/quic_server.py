"""An asyncio QUIC server on aioquic with stateless13's handshake, and an HTTP/3 page.

::

    server = await serve_quic(config, "127.0.0.1", 4433, validation="hrr", on_report=print)
    async with server:
        await server.serve_forever()

Datagrams for a known connection ID go to that connection (a :class:`ServerConnection`: its
protocol, counters, handshake deadline and report); all others go to the stateless
:class:`~.quic_front.InitialFront`, which answers, holds a fragment, or hands over a
:class:`~.quic_tls.ConnectionStart` from which the server builds a
:class:`~.quic_tls.StatelessQuicConnection` and its protocol.  The design of the whole is in
docs/QUIC.md.

The default protocol, :class:`H3PageProtocol`, answers every HTTP/3 request with a small page
saying what was negotiated, the client certificate's subject included.  ``create_protocol``
takes any aioquic ``QuicConnectionProtocol`` (subclass or factory), unchanged: the server keeps
each connection's :class:`ConnectionReport` and handshake timeout itself, from the events the
connection hands the protocol.  :class:`StatelessQuicProtocol` adds ``client_certificate`` and
refuses ``request_client_certificate`` (RFC 9001 §4.4).  ``aioquic_serve.serve`` is aioquic's
``serve()`` on this server.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import html
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress
from aioquic.quic.packet import QuicErrorCode, pull_quic_header
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_der_x509_certificate

from stateless13 import (
    CipherSuite,
    ClientAuth,
    ClientCertificate,
    Credential,
    LocalProtocolError,
    ServerConfig,
)

from .common import ConnectionReport, Reporter, set_receive_buffer
from .quic_front import Accept, FrontStats, InitialFront, QuicOptions, Reply, Validation
from .quic_tls import NO_POST_HANDSHAKE_AUTH, ConnectionStart, StatelessQuicConnection
from .quic_tokens import SERVER_CID_LENGTH

logger = logging.getLogger("stateless13.server")

PAGE_TEXT = "Hello from stateless13"
#: aioquic's "no error" for HTTP/3 (H3_NO_ERROR) and for QUIC.
_CLEAN_CLOSE_CODES = (QuicErrorCode.NO_ERROR, 0x100)


def quic_configuration(config: ServerConfig, options: QuicOptions) -> QuicConfiguration:
    """The aioquic configuration for our connections (the TLS settings stay in ``config``)."""
    credential = config.credentials[0]
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[p.decode("ascii", "replace") for p in config.alpn_protocols],
        # aioquic insists on a certificate and key for a server; only aioquic's own TLS, which
        # QuicTLS replaces, would use them.
        certificate=load_der_x509_certificate(credential.certificate_chain[0]),
        private_key=credential.private_key,
        connection_id_length=SERVER_CID_LENGTH,
        idle_timeout=options.idle_timeout,
        supported_versions=list(options.supported_versions),
    )


def spki_pin(credential: Credential) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the leaf certificate: what Chromium needs in
    ``--ignore-certificate-errors-spki-list`` to accept a self-signed certificate over QUIC."""
    certificate = load_der_x509_certificate(credential.certificate_chain[0])
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


class _CountingTransport(asyncio.DatagramTransport):
    """The server's UDP transport, counting what one connection sends."""

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        super().__init__()
        self._transport = transport
        self.datagrams = 0
        self.bytes = 0

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.datagrams += 1
        self.bytes += len(data)
        self._transport.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:  # a connection never closes the shared socket
        pass

    def abort(self) -> None:
        pass


class ServerConnection:
    """One connection as the server keeps it, whatever its protocol (any aioquic
    ``QuicConnectionProtocol``): what it received and sent, the handshake deadline, and its one
    :class:`ConnectionReport`.  It sees the connection's events as the protocol takes them
    (``StatelessQuicConnection.on_event``), so the protocol needs nothing of ours."""

    def __init__(
        self,
        protocol: QuicConnectionProtocol,
        quic: StatelessQuicConnection,
        *,
        on_report: Callable[[ConnectionReport], None],
        on_handshake_over: Callable[[], None],
    ) -> None:
        self.protocol = protocol
        self.quic = quic
        self.started = time.monotonic()
        self.on_report = on_report
        self.datagrams_in = 0
        self.bytes_in = 0
        self.handshake_done = False
        #: Called once, when the handshake is over (completed or not): the server's count of
        #: handshakes in progress (Validation.ADAPTIVE) goes down by one.
        self.on_handshake_over: Callable[[], None] | None = on_handshake_over
        self._reported = False
        self._counter: _CountingTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        quic.on_event = self.event

    def start(self, transport: asyncio.DatagramTransport, handshake_timeout: float) -> None:
        self._counter = _CountingTransport(transport)
        self.protocol.connection_made(self._counter)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(handshake_timeout, self._handshake_timed_out)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        self.datagrams_in += 1
        self.bytes_in += len(data)
        self.protocol.datagram_received(data, addr)

    def close(self) -> None:
        """CONNECTION_CLOSE, and no more timers (the server is closing its socket)."""
        self.protocol.close()
        if self._deadline is not None:
            self._deadline.cancel()
        if isinstance(self.protocol, StatelessQuicProtocol):
            self.protocol.stop_timers()  # and whatever else a subclass stops there
        else:
            stop_aioquic_timer(self.protocol)

    def _handshake_timed_out(self) -> None:
        if not self.handshake_done:
            self.protocol.close(QuicErrorCode.CONNECTION_REFUSED, "handshake timeout")
            self._finish("handshake timeout")

    def event(self, event: events.QuicEvent) -> None:
        """Keep what the report needs (called before the protocol handles the event)."""
        if isinstance(event, events.HandshakeCompleted):
            self.handshake_done = True
            self._handshake_over()
            if self._deadline is not None:
                self._deadline.cancel()
        elif isinstance(event, events.ConnectionTerminated):
            error = None
            if event.error_code not in _CLEAN_CLOSE_CODES:
                error = f"0x{event.error_code:x} {event.reason_phrase}".strip()
            tls_error = self.quic.quic_tls.error if self.quic.quic_tls else None
            if tls_error is not None:
                error = str(tls_error)
            if not self.handshake_done and error is None:
                error = "closed before the handshake completed"
            self._finish(error)

    def _handshake_over(self) -> None:
        callback, self.on_handshake_over = self.on_handshake_over, None
        if callback is not None:
            callback()

    def _finish(self, error: str | None) -> None:
        self._handshake_over()
        if self._deadline is not None:
            self._deadline.cancel()
        if self._reported:
            return
        self._reported = True
        engine = self.quic.quic_tls
        summary = engine.summary if engine is not None else None  # set once Finished verified
        start = self.quic.start
        self.on_report(
            ConnectionReport(
                peer=self.quic.peer,
                transport="quic",
                validation=start.validation,
                hello_retry=start.resume is not None or bool(summary and summary.hello_retry),
                cookie_verified=bool(summary and summary.cookie_verified),
                handshake=summary.event() if summary is not None else None,
                duration=time.monotonic() - self.started,
                error=error,
                datagrams_in=self.datagrams_in,
                bytes_in=self.bytes_in,
                datagrams_out=self._counter.datagrams if self._counter else 0,
                bytes_out=self._counter.bytes if self._counter else 0,
            )
        )


def stop_aioquic_timer(protocol: QuicConnectionProtocol) -> None:
    """Cancel the protocol's aioquic timer (loss detection, idle timeout)."""
    if protocol._timer is not None:
        protocol._timer.cancel()
        protocol._timer = None


class StatelessQuicProtocol(QuicConnectionProtocol):
    """aioquic's protocol plus what only our connections have: the client certificate, and
    post-handshake authentication refused.  Not needed otherwise: the server takes any
    ``QuicConnectionProtocol`` (:class:`ServerConnection` keeps the report and the timeout)."""

    _quic: StatelessQuicConnection

    @property
    def quic(self) -> StatelessQuicConnection:
        return self._quic

    @property
    def client_certificate(self) -> ClientCertificate | None:
        """The certificate the client authenticated with (``ServerConfig.client_auth``), once
        the handshake is complete; None if it sent none (or none was asked for)."""
        engine = self._quic.quic_tls
        summary = engine.summary if engine is not None else None  # set once Finished verified
        return summary.client_certificate if summary is not None else None

    def request_client_certificate(self, client_auth: ClientAuth | None = None) -> NoReturn:
        """Always refused with LocalProtocolError: RFC 9001 §4.4 forbids post-handshake
        authentication over QUIC; ask in the handshake (``ServerConfig.client_auth``)."""
        raise LocalProtocolError(NO_POST_HANDSHAKE_AUTH)

    def stop_timers(self) -> None:
        """The server is closing its socket: no more timers (a subclass stops its own work
        too, calling this)."""
        stop_aioquic_timer(self)

    def track_event(self, event: events.QuicEvent) -> None:
        """Does nothing: the server sees every connection's events itself
        (:class:`ServerConnection`); kept for subclasses written when they had to call it."""


class H3PageProtocol(StatelessQuicProtocol):
    """HTTP/3: every request gets a small HTML page saying what was negotiated."""

    def __init__(self, quic: StatelessQuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._h3: H3Connection | None = None

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._h3 = H3Connection(self._quic)
        if self._h3 is not None:
            for h3_event in self._h3.handle_event(event):
                self._h3_event_received(h3_event)

    def _h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            headers = dict(event.headers)
            self._respond(event.stream_id, headers.get(b":path", b"/").decode("ascii", "replace"))
        elif isinstance(event, DataReceived):
            pass  # request bodies are ignored

    def _respond(self, stream_id: int, path: str) -> None:
        assert self._h3 is not None
        engine = self._quic.quic_tls
        handshake = engine.server_handshake if engine is not None else None
        summary = handshake.summary if handshake is not None else None
        details = "handshake in progress"
        if summary is not None:
            details = (
                f"TLS 1.3 over QUIC, {CipherSuite(summary.cipher_suite).name}, "
                f"{summary.event().key_exchange}, "
                f"HelloRetryRequest: {'yes' if summary.hello_retry else 'no'}, "
                f"cookie verified: {'yes' if summary.cookie_verified else 'no'}, "
                f"session resumed: {'yes' if summary.resumed else 'no'}, "
                f"early data (0-RTT): {'yes' if summary.early_data else 'no'}, "
                f"address validation: {self._quic.start.validation}, "
                f"client certificate: {_client(summary.client_certificate)}"
            )
        body = (
            f"<!doctype html><title>stateless13</title><h1>{PAGE_TEXT}</h1>\n"
            f"<p>HTTP/3 {path}: {details}</p>\n"
        ).encode()
        self._h3.send_headers(
            stream_id,
            [
                (b":status", b"200"),
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        )
        self._h3.send_data(stream_id, body, end_stream=True)
        self.transmit()


def _client(certificate: ClientCertificate | None) -> str:
    """The client certificate's subject for the page, as the TCP page says it (demo.py)."""
    return "none" if certificate is None else html.escape(certificate.subject)


#: A ``QuicConnectionProtocol`` subclass, or any callable making one from the connection.
ProtocolFactory = Callable[[StatelessQuicConnection], QuicConnectionProtocol]


class QuicServer(asyncio.DatagramProtocol):
    """The UDP endpoint: routes datagrams to connections or to the stateless front.

    ``configuration``: aioquic's settings for the connections (flow control, idle timeout,
    congestion control, qlog, ...; its TLS fields are not read: ``config`` is the TLS); by
    default :func:`quic_configuration` of ``config`` and ``options``.  Its connection IDs must
    be ``SERVER_CID_LENGTH`` bytes (they encode the client's first one) and its versions those
    of ``options``."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        validation: Validation | str = Validation.ADAPTIVE,
        options: QuicOptions | None = None,
        create_protocol: ProtocolFactory = H3PageProtocol,
        on_report: Callable[[ConnectionReport], None] | None = None,
        clock: Callable[[], float] = time.time,
        configuration: QuicConfiguration | None = None,
    ) -> None:
        self.options = options or QuicOptions()
        if configuration is None:
            configuration = quic_configuration(config, self.options)
        if configuration.is_client or configuration.connection_id_length != SERVER_CID_LENGTH:
            raise LocalProtocolError(
                f"a server's QuicConfiguration, with {SERVER_CID_LENGTH}-byte connection IDs"
            )
        if tuple(configuration.supported_versions) != self.options.supported_versions:
            raise LocalProtocolError("QuicConfiguration and QuicOptions name other QUIC versions")
        #: Connections created whose handshake is not over yet.
        self.handshakes_in_progress = 0
        self.front = InitialFront(
            config,
            self.options,
            validation=validation,
            handshakes_in_progress=lambda: self.handshakes_in_progress,
        )
        self.config = self.front.config  # as QUIC serves it (InitialFront: 0-RTT's 0xffffffff)
        self.configuration = configuration
        self._create_protocol = create_protocol
        self.report = Reporter(on_report, transport="quic")
        self._clock = clock
        #: Our connections by connection ID (several IDs each).
        self._protocols: dict[bytes, ServerConnection] = {}
        self._transport: asyncio.DatagramTransport | None = None
        #: The UDP socket's receive buffer as the kernel set it (QuicOptions.receive_buffer).
        self.receive_buffer = 0
        self._closed = asyncio.get_running_loop().create_future()

    @property
    def stats(self) -> FrontStats:
        return self.front.stats

    @property
    def validation(self) -> Validation:
        return self.front.validation

    def log_stats(self) -> None:
        """Log the stat line: the connections' outcomes, the front's replies (HRRs, Retries and
        of those the ones sent for 0-RTT; they belong to no connection), the NEW_TOKEN tokens
        issued, accepted (a connection without HRR or Retry) and ignored, and what is open now."""
        front = self.front.stats
        self.report.stats.log_line(
            hrr_sent=front.hrr_sent,
            retry_sent=front.retry_sent,
            retry_for_0rtt=front.retry_for_0rtt,
            tokens_issued=front.tokens_issued,
            tokens_accepted=front.tokens_accepted,
            tokens_ignored=front.tokens_ignored,
            dropped=front.dropped,
            in_progress=self.handshakes_in_progress,
            open=self.connections,
            validating=int(self.front.adaptive_level is not Validation.NONE),
        )

    @property
    def connections(self) -> int:
        return len({id(c) for c in self._protocols.values()})

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.receive_buffer = set_receive_buffer(sock, self.options.receive_buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def datagram_received(self, data: bytes, addr: NetworkAddress) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=SERVER_CID_LENGTH)
        except (ValueError, BufferReadError):
            return
        connection = self._protocols.get(header.destination_cid)
        if connection is not None:
            connection.datagram_received(data, addr)
            return
        peer = (str(addr[0]), int(addr[1]))
        result = self.front.receive(data, peer, self._clock(), header)
        if isinstance(result, Reply):
            assert self._transport is not None
            self._transport.sendto(result.datagram, addr)
        elif isinstance(result, Accept):
            self._accept(result.start, peer, addr)

    def _accept(self, start: ConnectionStart, peer: tuple[str, int], addr: NetworkAddress) -> None:
        assert self._transport is not None
        if self.connections >= self.options.max_connections:
            self.front.stats.dropped += 1
            return
        quic = StatelessQuicConnection(
            configuration=self.configuration,
            server_config=self.config,
            peer=peer,
            start=start,
            new_token=lambda: self.front.new_token(peer, self._clock()),
        )
        protocol = self._create_protocol(quic)
        self.handshakes_in_progress += 1
        connection = ServerConnection(
            protocol, quic, on_report=self.report, on_handshake_over=self._handshake_over
        )
        protocol._connection_id_issued_handler = lambda cid: self._register(cid, connection)
        protocol._connection_id_retired_handler = lambda cid: self._unregister(cid, connection)
        protocol._connection_terminated_handler = lambda: self._forget(connection)
        connection.start(self._transport, self.options.handshake_timeout)
        self._protocols[start.host_cid] = connection
        if start.resume is None:
            # Until the client hears from us it keeps sending to the CID it chose; never let a
            # client-chosen CID shadow a connection's own.
            self._protocols.setdefault(start.key_cid, connection)
        for datagram in start.datagrams:
            connection.datagram_received(datagram, addr)

    def _handshake_over(self) -> None:
        self.handshakes_in_progress -= 1

    def _register(self, cid: bytes, connection: ServerConnection) -> None:
        self._protocols.setdefault(cid, connection)

    def _unregister(self, cid: bytes, connection: ServerConnection) -> None:
        if self._protocols.get(cid) is connection:
            del self._protocols[cid]

    def _forget(self, connection: ServerConnection) -> None:
        for cid in [c for c, known in self._protocols.items() if known is connection]:
            del self._protocols[cid]

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE) and the socket."""
        for connection in {id(c): c for c in self._protocols.values()}.values():
            connection.close()
        self._protocols.clear()
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        await self.wait_closed()

    async def __aenter__(self) -> QuicServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


def _with_h3(config: ServerConfig, create_protocol: ProtocolFactory) -> ServerConfig:
    if config.alpn_protocols:
        if create_protocol is H3PageProtocol and b"h3" not in config.alpn_protocols:
            raise LocalProtocolError("the HTTP/3 page needs b'h3' in ServerConfig.alpn_protocols")
        return config
    return dataclasses.replace(config, alpn_protocols=(b"h3",))


async def serve_quic(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    validation: Validation | str = Validation.ADAPTIVE,
    options: QuicOptions | None = None,
    create_protocol: ProtocolFactory = H3PageProtocol,
    on_report: Callable[[ConnectionReport], None] | None = None,
    reuse_port: bool = False,
    configuration: QuicConfiguration | None = None,
) -> QuicServer:
    """Serve QUIC on ``host``:``port`` (UDP; port 0 picks a free one: ``server.address``).

    ``validation``: a :class:`Validation` (or its value, ``"hrr"``): ``ADAPTIVE`` (the
    default: none while calm, the stateless HRR when many handshakes are in progress, a Retry
    under an Initial flood; ``QuicOptions.adaptive_*``), ``HRR`` (always the stateless
    HelloRetryRequest), ``RETRY`` (QUIC Retry), ``BOTH`` or ``NONE``.
    ``config.alpn_protocols`` defaults to ``(b"h3",)``.  ``on_report`` gets one
    :class:`ConnectionReport` per connection (also logged on ``stateless13.server``).
    ``create_protocol``: any aioquic ``QuicConnectionProtocol`` (class or factory).
    ``configuration``: the connections' aioquic settings (:class:`QuicServer`).
    """
    config = _with_h3(config, create_protocol)
    loop = asyncio.get_running_loop()
    _, server = await loop.create_datagram_endpoint(
        lambda: QuicServer(
            config,
            validation=validation,
            options=options,
            create_protocol=create_protocol,
            on_report=on_report,
            configuration=configuration,
        ),
        local_addr=(host, port),
        reuse_port=reuse_port or None,
    )
    return server


__all__ = [
    "PAGE_TEXT",
    "H3PageProtocol",
    "QuicServer",
    "ServerConnection",
    "StatelessQuicProtocol",
    "quic_configuration",
    "serve_quic",
    "spki_pin",
]
