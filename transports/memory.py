"""One TLS 1.3 server connection over memory buffers: the per-connection layer of every adapter.

It shows everything an adapter does with bytes, in one place: buffer what the peer sent, ask
``stateless_accept`` until it answers, send what it says, then hand over to the
``ServerConnection`` and pump its events.  Between the HelloRetryRequest and ClientHello2 it keeps
exactly one bit (that a retry was sent) and the unread bytes, like a TCP adapter keeps its socket.
The socket adapters (``asyncio_tcp``, ``blocking``) only move bytes between it and a socket; it is
also the easy way to run a server in tests.

It never raises for what the client does: a client that breaks the protocol, goes away or goes
over ``max_handshake_buffer`` ends the connection, ``closed`` turns true and ``error`` says why
(our alert, if any, waits in ``data_to_send()``).
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable

from stateless13 import (
    Accepted,
    AcceptResult,
    AlertDescription,
    AlertError,
    AlertReceived,
    ApplicationData,
    ClientAuth,
    ClientHelloBuffer,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    HelloRetry,
    LocalProtocolError,
    NeedMoreData,
    Rejected,
    ServerConfig,
    ServerConnection,
    stateless_accept,
)


class MemoryServer:
    """One server-side TLS connection whose wire is two byte buffers.

    ``receive(bytes)`` takes what the client sent (``b""``: it closed its end) and returns the
    events it caused; ``data_to_send()`` returns what to deliver to the client.  With
    ``stateless=False`` the handshake is an ordinary one (HRR only if the key shares do not fit).
    """

    __slots__ = (
        "_buffered",
        "_clock",
        "_max_handshake_buffer",
        "_outgoing",
        "_pending",
        "alert",
        "bytes_in",
        "bytes_out",
        "closed",
        "config",
        "connection",
        "cookie_verified",
        "error",
        "handshake",
        "hello_retry",
        "peer",
        "stateless",
    )

    def __init__(
        self,
        config: ServerConfig,
        *,
        stateless: bool = True,
        peer: tuple[str, int] | None = ("127.0.0.1", 0),
        clock: Callable[[], float] = time.time,
        max_handshake_buffer: int | None = None,
    ) -> None:
        self.config = config
        self.peer = peer
        #: Whether ClientHello1 goes to the stateless front (else an ordinary handshake).
        self.stateless = stateless
        self._clock = clock
        self._max_handshake_buffer = max_handshake_buffer
        self._buffered = 0  # bytes received toward the current ClientHello (and the handshake)
        # The bytes of a ClientHello still incomplete, and how far they were read (stateless
        # front only; none between the HRR and ClientHello2's first byte).
        self._pending: ClientHelloBuffer | None = None
        self._outgoing = bytearray()
        self.connection: ServerConnection | None = (
            None if stateless else ServerConnection(config, peer=peer)
        )
        #: An HRR went out (stateless: the one bit kept between ClientHello1 and 2).
        self.hello_retry = False
        #: The stateless front accepted a cookie (known before the handshake completes).
        self.cookie_verified = False
        #: What was agreed, once the handshake is complete.
        self.handshake: HandshakeComplete | None = None
        #: Nothing more will come from the client: it closed, sent an alert, or failed.
        self.closed = False
        #: Why the connection ended badly (the alert and its reason, a limit), if it did.
        self.error: str | None = None
        #: The alert we sent when we refused the client (``error`` says why), if we did.
        self.alert: AlertDescription | None = None
        #: Bytes received from the client and handed out by data_to_send(), on the wire.
        self.bytes_in = 0
        self.bytes_out = 0

    def receive(self, data: bytes) -> list[Event]:
        """Take what the client sent (``b""`` when it closed); the events it caused."""
        if self.closed:
            return []
        self.bytes_in += len(data)
        if self.connection is None:
            # What the stateless front buffers; a connection holds at most a partial record, and
            # bounds its handshake messages itself.
            self._buffered += len(data)
            limit = self._max_handshake_buffer
            if limit is not None and self._buffered > limit:
                return self._end("max_handshake_buffer exceeded")
            if not data:
                return self._end("client closed during the handshake")
            result = self._accept(data)
            if not isinstance(result, Accepted):
                return [result] if isinstance(result, AlertReceived) else []
        else:
            self.connection.receive_data(data)
        return self._events()

    def _accept(self, data: bytes) -> AcceptResult:
        """The stateless front, on everything buffered so far (read once: ClientHelloBuffer)."""
        if self._pending is None:
            self._pending = ClientHelloBuffer()
        self._pending.feed(data)
        result = stateless_accept(
            self.config,
            self._pending,
            peer=self.peer,
            now=self._clock(),
            after_retry=self.hello_retry,
        )
        if isinstance(result, NeedMoreData):
            return result
        self._pending = None
        if isinstance(result, AlertReceived):  # the client gave up (e.g. refused our HRR)
            self._end(f"client sent {result.name}")
        elif isinstance(result, Rejected):
            self._outgoing += result.data_to_send
            self.cookie_verified = result.cookie_verified
            self.alert = result.error.description
            self._end(f"{result.error.description.name}: {result.error.reason}")
        elif isinstance(result, HelloRetry):
            self._outgoing += result.data_to_send
            self.hello_retry = True
            self._buffered = 0  # ClientHello1 is gone; only ClientHello2 counts from here
        else:
            self._outgoing += result.data_to_send
            self.connection = result.connection
            self.cookie_verified = True
        return result

    def _events(self) -> list[Event]:
        assert self.connection is not None
        events: list[Event] = []
        try:
            while (event := self.connection.next_event()) is not None:
                events.append(event)
                if isinstance(event, HandshakeComplete):
                    self.handshake = event
                    self.hello_retry = self.hello_retry or event.hello_retry
                elif isinstance(event, ConnectionClosed):
                    self._end("client closed during the handshake", fine_after_handshake=True)
                elif isinstance(event, AlertReceived) and event.fatal:
                    self._end(f"client sent {event.name}", fine_after_handshake=True)
        except AlertError as error:
            self.alert = error.description
            self._end(f"{error.description.name}: {error.reason}")
        self.hello_retry = self.hello_retry or self.connection.hello_retry
        self._outgoing += self.connection.data_to_send()
        return events

    def _end(self, reason: str, *, fine_after_handshake: bool = False) -> list[Event]:
        """The client is done.  Closing (or a fatal alert of its own) after the handshake is how
        connections end, not an error."""
        self.closed = True
        if not (fine_after_handshake and self.handshake is not None):
            self.error = reason
        return []

    def send(self, data: bytes) -> None:
        if self.connection is None or self.handshake is None:
            raise LocalProtocolError("cannot send before the handshake completes")
        self.connection.send(data)
        self._outgoing += self.connection.data_to_send()

    def update_key(self, request_peer_update: bool) -> None:
        """Queue a KeyUpdate (RFC 8446 §4.6.3) and move to our next sending key."""
        if self.connection is None or self.handshake is None:
            raise LocalProtocolError("no KeyUpdate before the handshake completes")
        self.connection.update_key(request_peer_update)
        self._outgoing += self.connection.data_to_send()

    def request_client_certificate(self, client_auth: ClientAuth | None) -> None:
        """Queue a CertificateRequest (RFC 8446 §4.6.2); the answer comes as an event."""
        if self.connection is None or self.handshake is None:
            raise LocalProtocolError("no certificate request before the handshake completes")
        self.connection.request_client_certificate(client_auth)
        self._outgoing += self.connection.data_to_send()

    def close(self) -> None:
        """Queue close_notify (once the handshake is done; before it there is nothing to close)."""
        if self.connection is not None:
            self.connection.close()
            self._outgoing += self.connection.data_to_send()

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        self.bytes_out += len(data)
        return data

    @staticmethod
    def application_data(events: list[Event]) -> bytes:
        return b"".join(e.data for e in events if isinstance(e, ApplicationData))


class MemoryPair:
    """Our server and a Python ``ssl`` client over memory buffers, pumped for you: a handshake
    test in three lines, with no loop and no socket.

        pair = MemoryPair(ServerConfig.self_signed())
        event = pair.handshake()  # through the stateless HRR: event.cookie_verified
        assert pair.client_sends(b"ping") == [b"ping"]

    ``client_context`` is any client ``ssl.SSLContext`` (default: TLS 1.3, no certificate
    verification, as a test of the server wants); ``client`` is its ``ssl.SSLObject`` and
    ``server`` the ``MemoryServer``, both yours to drive further; ``events`` are the server's.
    """

    def __init__(
        self,
        config: ServerConfig,
        client_context: ssl.SSLContext | None = None,
        *,
        server_hostname: str | None = "localhost",
        stateless: bool = True,
    ) -> None:
        if client_context is None:
            client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_context.minimum_version = ssl.TLSVersion.TLSv1_3
            client_context.check_hostname = False
            client_context.verify_mode = ssl.CERT_NONE
        self.server = MemoryServer(config, stateless=stateless)
        self._to_client, self._to_server = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = client_context.wrap_bio(
            self._to_client, self._to_server, server_hostname=server_hostname
        )
        self.events: list[Event] = []
        self._client_done = False

    def pump(self) -> None:
        """Carry bytes both ways, the client's handshake stepping as they come, until neither
        side has more to say."""
        while True:
            if not self._client_done:
                try:
                    self.client.do_handshake()
                    self._client_done = True
                except ssl.SSLWantReadError:
                    pass
            to_server = self._to_server.read()
            if to_server:
                self.events += self.server.receive(to_server)
            to_client = self.server.data_to_send()
            if to_client:
                self._to_client.write(to_client)
            if not to_server and not to_client:
                return

    def handshake(self) -> HandshakeComplete:
        """Both handshakes to their end: the server's HandshakeComplete.  ssl.SSLError if the
        client refused us; AssertionError with ``server.error`` if the server refused it."""
        try:
            self.pump()
            if not self._client_done:
                self.client.do_handshake()  # raises the client's own error
        except ssl.SSLError as error:
            if self.server.error and not self.server.error.startswith("client sent"):  # ours
                raise AssertionError(f"the server refused: {self.server.error}") from error
            raise
        assert self.server.handshake is not None, f"the server refused: {self.server.error}"
        return self.server.handshake

    def client_sends(self, data: bytes) -> list[bytes]:
        """The client writes ``data``: the application data the server received."""
        self.client.write(data)
        before = len(self.events)
        self.pump()
        return [e.data for e in self.events[before:] if isinstance(e, ApplicationData)]

    def server_sends(self, data: bytes) -> bytes:
        """The server writes ``data``: what the client reads (tickets are read on the way)."""
        self.server.send(data)
        self.pump()
        received = b""
        with contextlib.suppress(ssl.SSLWantReadError):
            while chunk := self.client.read(65536):
                received += chunk
        return received
