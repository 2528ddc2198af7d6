"""What the socket adapters share: limits, the per-connection handshake step, reports.

The adapters own the sockets and the clock; everything that decides what to do with bytes is
here, once: :class:`HandshakeDriver` (the stateless front and the handshake, bytes in, bytes out)
and :func:`absorb` (application bytes in, data and end of stream out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stateless13 import (
    AlertError,
    AlertReceived,
    ApplicationData,
    ConnectionClosed,
    HandshakeComplete,
    LocalProtocolError,
    ServerConnection,
)

from .memory import MemoryServer

logger = logging.getLogger("stateless13.server")


class HandshakeError(Exception):
    """The handshake did not complete: refused by TLS, timed out, or over a limit.

    ``data_to_send`` (an alert, if any) should still go to the client before closing.
    """

    def __init__(self, reason: str, data_to_send: bytes = b"") -> None:
        super().__init__(reason)
        self.data_to_send = data_to_send


@dataclass(frozen=True)
class Limits:
    """Every limit a socket server enforces, in one place (all documented in the README)."""

    #: Seconds from accept to a completed handshake, including the wait between the
    #: HelloRetryRequest and ClientHello2: a slow-loris client is cut off here.
    handshake_timeout: float = 10.0
    #: Seconds without a byte from the client once the handshake is done.
    idle_timeout: float = 300.0
    #: Connections still handshaking at once; more are closed at accept, before any read.
    max_concurrent_handshakes: int = 1024
    #: Bytes buffered from a client before its handshake completes (ClientHello records, CCS).
    max_handshake_buffer: int = 65536
    #: Bytes read from the socket at a time (and so the most buffered per read after the
    #: handshake: the application reads at its own pace, the adapter never reads ahead more).
    read_size: int = 65536

    def __post_init__(self) -> None:
        if min(self.handshake_timeout, self.idle_timeout) <= 0:
            raise LocalProtocolError("timeouts must be positive")
        if self.max_concurrent_handshakes < 1 or self.read_size < 1:
            raise LocalProtocolError("limits must be positive")


@dataclass(frozen=True)
class ConnectionReport:
    """One line of the connection log: what happened to one client, however it ended."""

    peer: tuple[str, int]
    hello_retry: bool
    cookie_verified: bool
    handshake: HandshakeComplete | None
    duration: float  # seconds from accept to close
    error: str | None = None  # the alert (or timeout/limit) and its reason, if it failed

    @classmethod
    def refused(cls, peer: tuple[str, int]) -> ConnectionReport:
        return cls(peer, False, False, None, 0.0, "refused: max_concurrent_handshakes reached")

    def log_line(self) -> str:
        host, port = self.peer[0], self.peer[1]
        parts = [f"peer={host}:{port}", f"hrr={'yes' if self.hello_retry else 'no'}"]
        parts.append(f"cookie={'verified' if self.cookie_verified else 'none'}")
        if self.handshake is not None:
            h = self.handshake
            parts += [
                f"suite={h.cipher_suite.name}",
                f"group={h.group.name}",
                f"alpn={h.alpn_protocol or '-'}",
                f"sni={h.server_name or '-'}",
            ]
        parts.append(f"duration={self.duration * 1000:.1f}ms")
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)


class StreamState:
    """What both stream classes hold after the handshake: the connection, what was agreed, and
    the application data not yet handed to the application."""

    def __init__(
        self,
        connection: ServerConnection,
        driver: HandshakeDriver,
        limits: Limits,
        peer: tuple[str, int],
    ) -> None:
        assert driver.server.handshake is not None
        self._connection = connection
        self._limits = limits
        self._received = driver.application_data
        self._eof = driver.closed  # the client may close in the same flight as its Finished
        self.handshake: HandshakeComplete = driver.server.handshake
        self.peer = peer

    @property
    def alpn_protocol(self) -> str | None:
        return self.handshake.alpn_protocol

    @property
    def server_name(self) -> str | None:
        return self.handshake.server_name

    def _absorb(self, data: bytes) -> None:
        chunks, self._eof = absorb(self._connection, data, self.peer)
        self._received += chunks

    def _next_chunk(self) -> bytes:
        return self._received.pop(0) if self._received else b""


class HandshakeDriver:
    """One connection's way from its first byte to a completed handshake, without I/O.

    Between the HelloRetryRequest and ClientHello2 it holds the MemoryServer (unread bytes and
    one bit) and two counters: nothing else about the client.
    """

    def __init__(self, server: MemoryServer, limits: Limits) -> None:
        self.server = server
        self.limits = limits
        self.application_data: list[bytes] = []  # sent with the client's Finished, if any
        self.closed = False  # the client closed in the same flight as its Finished
        self._buffered = 0

    @property
    def done(self) -> bool:
        return self.server.handshake is not None

    def step(self, data: bytes) -> bytes:
        """Feed what the socket read (b"" at EOF); return what to write.

        Raises HandshakeError (with the alert to write in ``data_to_send``) when it fails.
        """
        server = self.server
        if not data:
            raise HandshakeError("client closed during the handshake")
        self._buffered += len(data)
        if self._buffered > self.limits.max_handshake_buffer:
            raise HandshakeError("max_handshake_buffer exceeded")
        try:
            events = server.receive(data)
        except AlertError as exc:
            raise HandshakeError(
                f"{exc.description.name}: {exc.reason}", server.data_to_send()
            ) from None
        if server.rejected is not None:
            raise HandshakeError(
                f"{server.rejected.description.name}: {server.rejected.reason}",
                server.data_to_send(),
            )
        self.application_data += [e.data for e in events if isinstance(e, ApplicationData)]
        self.closed = any(isinstance(e, (ConnectionClosed, AlertReceived)) for e in events)
        if self.closed and not self.done:
            alert = next((e for e in events if isinstance(e, AlertReceived)), None)
            raise HandshakeError(
                "client closed during the handshake"
                if alert is None
                else f"client sent {getattr(alert.description, 'name', alert.description)}",
                server.data_to_send(),
            )
        if server.hello_retry and server.connection is None:
            self._buffered = 0  # ClientHello1 is gone; only ClientHello2 counts from here
        return server.data_to_send()

    def report(self, peer: tuple[str, int], duration: float, error: str | None) -> ConnectionReport:
        server = self.server
        handshake = server.handshake
        return ConnectionReport(
            peer,
            server.hello_retry or bool(handshake and handshake.hello_retry),
            server.cookie_verified,
            handshake,
            duration,
            error,
        )


def absorb(
    connection: ServerConnection, data: bytes, peer: tuple[str, int]
) -> tuple[list[bytes], bool]:
    """Application data chunks in ``data`` (b"" = EOF), and whether the stream has ended.

    A protocol error ends the stream too (the alert is then in ``connection.data_to_send()``).
    """
    connection.receive_data(data)
    chunks: list[bytes] = []
    ended = False
    try:
        for event in connection.events():
            if isinstance(event, ApplicationData):
                chunks.append(event.data)
            elif isinstance(event, ConnectionClosed) or (
                isinstance(event, AlertReceived) and event.fatal
            ):
                ended = True
    except AlertError as exc:
        logger.info("peer=%s:%s error=%r", *peer, f"{exc.description.name}: {exc.reason}")
        ended = True
    return chunks, ended
