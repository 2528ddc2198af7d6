"""What the socket adapters share: limits, the connection report, the stream's state.

The adapters own the sockets and the clock; what to do with the bytes is decided by one
:class:`~stateless13.transports.memory.MemoryServer` per connection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import resource
import threading
import time
from dataclasses import dataclass

from stateless13 import (
    ApplicationData,
    HandshakeComplete,
    LocalProtocolError,
)

from .memory import MemoryServer

logger = logging.getLogger("stateless13.server")


class WriteTimeout(ConnectionError):
    """The client took no bytes for ``Limits.write_timeout`` seconds: the connection is cut."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"write_timeout ({seconds:g}s): the client stopped reading")


class HandshakeError(Exception):
    """``accept_tls``: the handshake did not complete (refused by TLS, timed out, over a limit,
    the client left); our alert, if any, was sent."""


#: Connections the kernel queues for accept() (listen's backlog): nginx's 511, not asyncio's 100,
#: which a burst of a few hundred clients overflows (each overflow costs a client a 1 s retry).
DEFAULT_BACKLOG = 511


@dataclass(frozen=True)
class Limits:
    """Every limit a socket server enforces, in one place (all documented in the README)."""

    #: Seconds from accept to a completed handshake, including the wait between the
    #: HelloRetryRequest and ClientHello2: a slow-loris client is cut off here.
    handshake_timeout: float = 10.0
    #: Seconds without a byte from the client once the handshake is done.
    idle_timeout: float = 300.0
    #: Seconds a write may wait for the client to take the bytes (a drain, a close): a client that
    #: stops reading is cut off here instead of holding its connection and buffers forever.
    write_timeout: float = 30.0
    #: Connections still handshaking at once; more are closed at accept, before any read.
    max_concurrent_handshakes: int = 1024
    #: Connections still handshaking at once from one source (an IPv4 address, an IPv6 /64):
    #: one address holding thousands of stalled handshakes cannot take every slot.
    max_handshakes_per_source: int = 64
    source_prefix_v4: int = 32
    source_prefix_v6: int = 64
    #: Connections open at once, handshaking or not; more are closed at accept.  None: what the
    #: process's open-file limit leaves (``connection_budget``), so accept() never runs out of
    #: descriptors (which asyncio reports with a traceback per failed accept).
    max_connections: int | None = None
    #: Bytes buffered from a client before the stateless front answers (ClientHello records,
    #: CCS, refused early data), counted anew after the HRR.
    max_handshake_buffer: int = 65536
    #: Bytes read from the socket at a time (and so the most buffered per read after the
    #: handshake: the application reads at its own pace, the adapter never reads ahead more).
    read_size: int = 65536

    def __post_init__(self) -> None:
        if min(self.handshake_timeout, self.idle_timeout, self.write_timeout) <= 0:
            raise LocalProtocolError("timeouts must be positive")
        if self.max_concurrent_handshakes < 1 or self.read_size < 1:
            raise LocalProtocolError("limits must be positive")
        if self.max_connections is not None and self.max_connections < 1:
            raise LocalProtocolError("max_connections must be positive")
        if self.max_handshakes_per_source < 1:
            raise LocalProtocolError("max_handshakes_per_source must be positive")
        if not (0 <= self.source_prefix_v4 <= 32 and 0 <= self.source_prefix_v6 <= 128):
            raise LocalProtocolError("source prefixes: 0-32 bits for IPv4, 0-128 for IPv6")


#: Descriptors kept back from connections: the listening sockets, logs, the key log, the
#: certificate files, the event loop's own.
FD_RESERVE = 64


class RateLimitedWarning:
    """One warning line per ``interval`` seconds however often it happens, with the count since
    the last line (a flood must not turn into a flood of log lines)."""

    def __init__(self, message: str, interval: float = 10.0) -> None:
        self.message = message
        self.interval = interval
        self.count = 0
        self._unreported = 0
        self._last = -interval

    def __call__(self, detail: object = "") -> None:
        self.count += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            logger.warning("%s (%d times): %s", self.message, self._unreported, detail)
            self._last, self._unreported = now, 0


def _open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def default_backlog() -> int:
    """``DEFAULT_BACKLOG``, or less when descriptors are scarce: asyncio accepts up to a backlog
    of connections at once before any code of ours runs, so a burst must fit in what is free."""
    return min(DEFAULT_BACKLOG, max(16, (_open_file_limit() - FD_RESERVE) // 4))


def connection_budget(limits: Limits, backlog: int) -> int:
    """``limits.max_connections``, or what the open-file limit leaves for connections once the
    reserve and one burst of accepts are kept back: accept() then never runs out."""
    if limits.max_connections is not None:
        return limits.max_connections
    return max(1, _open_file_limit() - FD_RESERVE - backlog)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft open-file limit to its hard limit, as servers do at start (a
    soft limit of 1024 is common, and is less than the connections a front must hold); the
    (soft, hard) limits after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass(frozen=True)
class ConnectionReport:
    """One line of the connection log: what happened to one client, however it ended, over TCP
    or QUIC (the same report for both)."""

    peer: tuple[str, int]
    hello_retry: bool
    cookie_verified: bool
    handshake: HandshakeComplete | None
    duration: float  # seconds from accept (QUIC: from the connection's creation) to close
    error: str | None = None  # the alert (or timeout/limit) and its reason, if it failed
    transport: str = "tcp"  # or "quic"
    #: QUIC: how the address was validated ("cookie", "retry", "retry+cookie", "none").
    validation: str | None = None
    #: QUIC: the connection's own datagrams (the stateless HRR and the ClientHello1 it answered
    #: belong to no connection: they are counted in the server's stats).
    datagrams_in: int | None = None
    bytes_in: int | None = None
    datagrams_out: int | None = None
    bytes_out: int | None = None

    @classmethod
    def refused(cls, peer: tuple[str, int], limit: str) -> ConnectionReport:
        """Closed at accept: ``limit`` (max_connections, max_concurrent_handshakes) was reached."""
        return cls(peer, False, False, None, 0.0, f"refused: {limit} reached")

    @classmethod
    def of(
        cls, session: MemoryServer, peer: tuple[str, int], duration: float, error: str | None
    ) -> ConnectionReport:
        """The report of ``session``; ``error`` (a timeout, the socket) before the session's own."""
        return cls(
            peer,
            session.hello_retry,
            session.cookie_verified,
            session.handshake,
            duration,
            error or session.error,
        )

    def log_line(self) -> str:
        host, port = self.peer[0], self.peer[1]
        parts = [f"peer={host}:{port}"]
        if self.transport != "tcp":
            parts.append(self.transport)
        if self.validation is not None:
            parts.append(f"validation={self.validation}")
        parts.append(f"hrr={'yes' if self.hello_retry else 'no'}")
        parts.append(f"cookie={'verified' if self.cookie_verified else 'none'}")
        if self.handshake is not None:
            h = self.handshake
            parts += [
                f"suite={h.cipher_suite.name}",
                f"group={h.group.name}",
                f"alpn={_loggable(h.alpn_protocol)}",
                f"sni={_loggable(h.server_name)}",
            ]
        if self.datagrams_in is not None:
            parts.append(f"in={self.datagrams_in}/{self.bytes_in}B")
        if self.datagrams_out is not None:
            parts.append(f"out={self.datagrams_out}/{self.bytes_out}B")
        parts.append(f"duration={self.duration * 1000:.1f}ms")
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)


def _loggable(value: str | None) -> str:
    """A client's string as it may appear in a log line: plain if it is harmless, else escaped
    (a newline would forge a line, an escape sequence would paint the terminal)."""
    if value is None:
        return "-"
    return value if _HARMLESS.fullmatch(value) else repr(value)


_HARMLESS = re.compile(r"[A-Za-z0-9._:/-]+")


class Admission:
    """Who may connect: the counts behind every limit checked at accept, kept once for both
    socket loops (thread-safe for the blocking one).

    A source is an IPv4 address or an IPv6 /64 (``Limits.source_prefix_v4``, ``_v6``): one
    machine, or one customer's network, however many addresses it uses.
    """

    def __init__(self, limits: Limits, max_connections: int) -> None:
        self.limits = limits
        self.max_connections = max_connections
        self.open = 0
        self.handshaking = 0
        self._by_source: dict[str, int] = {}
        self._lock = threading.Lock()

    def source(self, peer: tuple[str, int]) -> str:
        address = ipaddress.ip_address(peer[0])
        prefix = (
            self.limits.source_prefix_v4 if address.version == 4 else self.limits.source_prefix_v6
        )
        return str(ipaddress.ip_network((address, prefix), strict=False))

    def admit(self, source: str) -> str | None:
        """Count a new connection in, or the limit it would go over (then it is not counted)."""
        limits = self.limits
        with self._lock:
            if self.open >= self.max_connections:
                return "max_connections"
            if self.handshaking >= limits.max_concurrent_handshakes:
                return "max_concurrent_handshakes"
            if self._by_source.get(source, 0) >= limits.max_handshakes_per_source:
                return "max_handshakes_per_source"
            self.open += 1
            self.handshaking += 1
            self._by_source[source] = self._by_source.get(source, 0) + 1
        return None

    def handshake_over(self, source: str) -> None:
        """The connection's handshake is over, done or failed (it keeps its open slot)."""
        with self._lock:
            self.handshaking -= 1
            left = self._by_source[source] - 1
            if left:
                self._by_source[source] = left
            else:
                del self._by_source[source]

    def closed(self) -> None:
        with self._lock:
            self.open -= 1


class StreamState:
    """What both stream classes hold after the handshake: the connection (a MemoryServer), what
    was agreed, and the application data not yet handed to the application."""

    def __init__(
        self,
        session: MemoryServer,
        received: list[bytes],
        limits: Limits,
        peer: tuple[str, int],
    ) -> None:
        assert session.handshake is not None
        self._session = session
        self._limits = limits
        self._received = received  # came with the client's Finished, if any
        self._idle = False  # idle_timeout passed: the stream has ended
        self.handshake: HandshakeComplete = session.handshake
        self.peer = peer

    @property
    def alpn_protocol(self) -> str | None:
        return self.handshake.alpn_protocol

    @property
    def server_name(self) -> str | None:
        return self.handshake.server_name

    @property
    def _eof(self) -> bool:
        return self._session.closed or self._idle

    def _absorb(self, data: bytes) -> None:
        self._received += [
            e.data for e in self._session.receive(data) if isinstance(e, ApplicationData)
        ]

    def _next_chunk(self) -> bytes:
        return self._received.pop(0) if self._received else b""


def handshake_step(session: MemoryServer, data: bytes, received: list[bytes]) -> bytes:
    """One read of the handshake: feed it, keep any application data, return what to write."""
    received += [e.data for e in session.receive(data) if isinstance(e, ApplicationData)]
    return session.data_to_send()
