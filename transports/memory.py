"""A TLS 1.3 server over memory buffers: the reference adapter, and the easy way to test.

It shows everything an adapter does, in a few lines: buffer what the peer sent, ask
``stateless_accept`` until it answers, send what it says, then hand over to the
``ServerConnection`` and pump its events.  Between the HelloRetryRequest and ClientHello2 it keeps
exactly one bit (that a retry was sent) and the unread bytes, like a TCP adapter keeps its socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stateless13 import (
    Accepted,
    AlertError,
    AlertReceived,
    ApplicationData,
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

    ``receive(bytes)`` takes what the client sent and returns the events it caused;
    ``data_to_send()`` returns what to deliver to the client.  With ``stateless=False`` the
    handshake is an ordinary one (HRR only if the client's key shares do not fit).
    """

    __slots__ = (
        "_clock",
        "_outgoing",
        "_pending",
        "client_alert",
        "config",
        "connection",
        "cookie_verified",
        "handshake",
        "hello_retry",
        "peer",
        "rejected",
    )

    def __init__(
        self,
        config: ServerConfig,
        *,
        stateless: bool = True,
        peer: tuple[str, int] | None = ("127.0.0.1", 0),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.peer = peer
        self._clock = clock
        self._pending = b""  # bytes of a ClientHello still incomplete (stateless front only)
        #: A stateless HelloRetryRequest went out: the one bit kept between ClientHello1 and 2.
        self.hello_retry = False
        self._outgoing = bytearray()
        self.connection: ServerConnection | None = (
            None if stateless else ServerConnection(config, peer=peer)
        )
        #: Set when the stateless front refused the client (the alert is in data_to_send()).
        self.rejected: AlertError | None = None
        #: Set when the client sent an alert instead of a ClientHello (nothing is sent back).
        self.client_alert: AlertReceived | None = None
        #: The stateless front accepted a cookie (known before the handshake completes).
        self.cookie_verified = False
        self.handshake: HandshakeComplete | None = None

    def receive(self, data: bytes) -> list[Event]:
        if self.connection is None:
            if self.rejected is not None or self.client_alert is not None:
                return []
            self._pending += data
            result = stateless_accept(
                self.config,
                self._pending,
                peer=self.peer,
                now=self._clock(),
                after_retry=self.hello_retry,
            )
            if isinstance(result, NeedMoreData):
                return []
            if isinstance(result, AlertReceived):  # the client gave up (e.g. refused our HRR)
                self._pending = b""
                self.client_alert = result
                return [result]
            self._pending = b""
            self._outgoing += result.data_to_send
            if isinstance(result, HelloRetry):
                self.hello_retry = True
                return []
            if isinstance(result, Rejected):
                self.rejected = result.error
                return []
            assert isinstance(result, Accepted)
            self.connection = result.connection
            self.cookie_verified = True
        else:
            self.connection.receive_data(data)
        try:
            events = self.connection.events()
        finally:
            self._outgoing += self.connection.data_to_send()
        for event in events:
            if isinstance(event, HandshakeComplete):
                self.handshake = event
        return events

    def send(self, data: bytes) -> None:
        if self.connection is None:
            raise LocalProtocolError("handshake not started")
        self.connection.send(data)
        self._outgoing += self.connection.data_to_send()

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self._outgoing += self.connection.data_to_send()

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    @staticmethod
    def application_data(events: list[Event]) -> bytes:
        return b"".join(e.data for e in events if isinstance(e, ApplicationData))
