"""What the socket adapters share: limits, the connection report, the stream's state.

The adapters own the sockets and the clock; what to do with the bytes is decided by one
:class:`~stateless13.transports.memory.MemoryServer` per connection.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import ipaddress
import logging
import re
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stateless13 import (
    ApplicationData,
    ClientAuth,
    ClientAuthenticated,
    ClientCertificate,
    EarlyData,
    HandshakeComplete,
    LocalProtocolError,
    ServerConfig,
)

from .memory import MemoryServer
from .proxy_protocol import (
    Network,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    plain_address,
    trusted,
)

logger = logging.getLogger("stateless13.server")
#: The stat lines' logger: an operator who silences the per-connection lines keeps these.
STATS_LOGGER = "stateless13.stats"


class WriteTimeout(ConnectionError):
    """The client took no bytes for ``Limits.write_timeout`` seconds: the connection is cut."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"write_timeout ({seconds:g}s): the client stopped reading")


class NoClientCertificate(ConnectionError):
    """``request_client_certificate``: the connection ended before the client's answer (the
    certificate was refused, its alert sent; or the client left or went idle)."""


class HandshakeError(Exception):
    """``accept_tls``: the handshake did not complete (refused by TLS, timed out, over a limit,
    the client left); our alert, if any, was sent."""


class Validation(enum.Enum):
    """How a server makes a new client prove its address before it spends on it.

    TCP takes ``ADAPTIVE``, ``HRR`` and ``NONE``; QUIC all five (``quic_front``)."""

    #: The stateless HelloRetryRequest only under pressure (``PressureGauge``): an idle server
    #: answers ClientHello1 at once and saves honest clients the round trip, as Linux SYN
    #: cookies and msquic's RetryMemoryLimit do; QUIC goes on to a Retry under an Initial flood.
    ADAPTIVE = "adaptive"
    #: Always a stateless HelloRetryRequest; ClientHello2 returns its cookie.  QUIC with early
    #: data on: a ClientHello1 offering 0-RTT gets a Retry instead, which keeps it (docs/QUIC.md).
    HRR = "hrr"
    RETRY = "retry"  # QUIC: a Retry with a stateless token, then an ordinary handshake
    #: QUIC: a Retry, then the stateless HRR (not for a ClientHello offering 0-RTT, as HRR).
    BOTH = "both"
    NONE = "none"  # never: an ordinary handshake (an HRR only if the key shares do not fit)

    @classmethod
    def parse(cls, value: Validation | str, allowed: tuple[Validation, ...]) -> Validation:
        """``value`` (a member or its value, e.g. ``"hrr"``) if it is one of ``allowed``."""
        try:
            validation = cls(value)
        except ValueError:
            validation = None
        if validation not in allowed:
            names = ", ".join(v.value for v in allowed)
            raise LocalProtocolError(f"validation must be one of {names}, not {value!r}")
        return validation


TCP_VALIDATIONS = (Validation.ADAPTIVE, Validation.HRR, Validation.NONE)


class PressureGauge:
    """Whether a server is under pressure, from a load figure (handshakes in progress, new
    clients a second): on as soon as it goes above ``high``; off again once it was last seen
    above half of it ``hold`` seconds ago.  A flood makes the load spike and dip (a fast
    stateless front drains the very handshakes in progress it is measured by), so the gauge
    holds rather than flip back with every dip."""

    __slots__ = ("_busy_at", "high", "hold", "on")

    def __init__(self, high: float, hold: float = 5.0) -> None:
        self.high = high
        self.hold = hold
        self.on = False
        self._busy_at = -float("inf")

    def __call__(self, load: float, now: float) -> bool:
        if load > self.high:
            self.on = True
        if load > self.high / 2:
            self._busy_at = now
        elif self.on and now - self._busy_at >= self.hold:
            self.on = False
        return self.on


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
    #: Validation.ADAPTIVE: the stateless HRR goes on when more connections than this are
    #: handshaking, off again 5 s after the count was last above half (PressureGauge).  An
    #: idle server is far below it; a flood of connections that stall or leave after
    #: ClientHello1 crosses it within a second, even from one address (half the per-source
    #: limit, which would otherwise stop one address short of it).
    adaptive_handshakes: int = 32
    #: Bytes read from the socket at a time (and so the most buffered per read after the
    #: handshake: the application reads at its own pace, the adapter never reads ahead more).
    read_size: int = 65536
    #: The TCP balancers in front of this server (``ipaddress.ip_network`` values;
    #: ``proxy_protocol.parse_networks("10.0.0.0/8,...")`` makes them from text).  A connection
    #: from one of them must start with a PROXY protocol header, version 1 or 2 (HAProxy's
    #: send-proxy, nginx's proxy_protocol on, AWS NLB), within ``handshake_timeout``, or it is
    #: closed without a TLS alert; the client the header names is then the connection's peer:
    #: the cookie binds its address, the per-source limit counts it, the log line says
    #: ``peer=CLIENT via=BALANCER``.  A connection from anywhere else is served as ever, and a
    #: header it sends is not honoured (TLS refuses it as the garbage it is there): only the
    #: listed balancers can name a client (nginx's ``set_real_ip_from``, not HAProxy's
    #: ``accept-proxy``, which expects the header from everyone).  Empty (the default): off.
    proxy_protocol_from: tuple[Network, ...] = ()

    def __post_init__(self) -> None:
        if min(self.handshake_timeout, self.idle_timeout, self.write_timeout) <= 0:
            raise LocalProtocolError("timeouts must be positive")
        if self.max_concurrent_handshakes < 1 or self.read_size < 1:
            raise LocalProtocolError("limits must be positive")
        if self.max_connections is not None and self.max_connections < 1:
            raise LocalProtocolError("max_connections must be positive")
        if self.max_handshakes_per_source < 1 or self.adaptive_handshakes < 1:
            raise LocalProtocolError("max_handshakes_per_source, adaptive_handshakes: positive")
        if not (0 <= self.source_prefix_v4 <= 32 and 0 <= self.source_prefix_v6 <= 128):
            raise LocalProtocolError("source prefixes: 0-32 bits for IPv4, 0-128 for IPv6")
        networks = self.proxy_protocol_from
        if not isinstance(networks, tuple) or not all(
            isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) for n in networks
        ):
            raise LocalProtocolError(
                "proxy_protocol_from: a tuple of ipaddress networks"
                " (proxy_protocol.parse_networks('10.0.0.0/8') makes one from text)"
            )


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


#: The receive buffer a UDP server asks for: the kernel's default (208 KiB on Linux) drops most
#: of a burst before the event loop reads any; quic-go asks for 7 MiB, as here.
UDP_RECEIVE_BUFFER = 7 << 20


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer (forced when allowed); the size the kernel gave."""
    # Linux's SO_RCVBUFFORCE (33), which Python's socket module does not name.
    force = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
    for option in (force, socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            break
        except OSError:  # SO_RCVBUFFORCE needs CAP_NET_ADMIN: fall back to the capped one
            continue
    # Linux reports twice what was set (it counts its own bookkeeping).
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


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
    #: How the address was validated: "hrr" (the stateless HRR's cookie), "none"; QUIC also
    #: "cookie" (its name for "hrr"), "retry", "retry+cookie", "token" (a NEW_TOKEN token from
    #: an earlier connection).  None: refused before any.
    validation: str | None = None
    #: Seconds from accept (QUIC: the connection's creation) to the completed handshake.
    handshake_time: float | None = None
    #: QUIC: the connection's own datagrams (the stateless HRR and the ClientHello1 it answered
    #: belong to no connection: they are counted in the server's stats).  TCP: no datagrams.
    datagrams_in: int | None = None
    bytes_in: int | None = None
    datagrams_out: int | None = None
    bytes_out: int | None = None
    #: DTLS: times our flights were sent again (a timer, an ACK naming a gap, the client
    #: resending its own flight); None where the transport retransmits itself (TCP, QUIC).
    retransmissions: int | None = None
    #: The client's certificate: the handshake's, or the latest a post-handshake authentication
    #: got (``request_client_certificate``).
    client_certificate: ClientCertificate | None = None
    #: The balancer the connection came through, when its PROXY protocol header named the
    #: client (``peer``); None for a direct connection (``Limits.proxy_protocol_from``).
    via: tuple[str, int] | None = None

    @classmethod
    def refused(
        cls, peer: tuple[str, int], limit: str, via: tuple[str, int] | None = None
    ) -> ConnectionReport:
        """Closed at accept: ``limit`` (max_connections, max_concurrent_handshakes) was reached;
        or, behind a balancer, once its PROXY header named the client (per source)."""
        return cls(peer, False, False, None, 0.0, f"refused: {limit} reached", via=via)

    @classmethod
    def before_tls(cls, balancer: tuple[str, int], started: float, error: str) -> ConnectionReport:
        """A balancer's connection closed before TLS began: no valid PROXY header (``error``
        ``proxy_protocol: ...``, counted and warned of, not logged each), none within the
        handshake timeout, or the balancer left."""
        return cls(balancer, False, False, None, time.monotonic() - started, error)

    @classmethod
    def of(
        cls,
        session: MemoryServer,
        peer: tuple[str, int],
        started: float,
        handshake_time: float | None,
        error: str | None,
        via: tuple[str, int] | None = None,
    ) -> ConnectionReport:
        """The report of ``session``, accepted at ``started`` (time.monotonic), closed now;
        ``handshake_time``: seconds until its handshake was over, completed or not; ``error`` (a
        timeout, the socket) before the session's own; ``via``: the balancer, if any."""
        return cls(
            peer,
            session.hello_retry,
            session.cookie_verified,
            session.handshake,
            time.monotonic() - started,
            error or session.error,
            validation="hrr" if session.stateless else "none",
            handshake_time=handshake_time if session.handshake is not None else None,
            bytes_in=session.bytes_in,
            bytes_out=session.bytes_out,
            client_certificate=None
            if session.connection is None
            else session.connection.client_certificate,
            via=via,
        )

    @property
    def _client_certificate(self) -> ClientCertificate | None:
        """The connection's latest (QUIC reports carry the handshake's only)."""
        if self.client_certificate is not None:
            return self.client_certificate
        return None if self.handshake is None else self.handshake.client_certificate

    @functools.cached_property  # read by the counters, the log level and the fields alike
    def outcome(self) -> str:
        """What became of the client, as the stat line counts it: ``completed``,
        ``left_after_hrr`` (took the HelloRetryRequest and went: what a flood of spoofed or
        abandoned ClientHellos looks like, so counted but not logged), or why it failed
        (``refused_<limit>``, ``handshake_timeout``, an alert's name, ``client_left``...)."""
        if self.handshake is not None:
            return "completed" if self.error is None else "failed_after_handshake"
        error = self.error or "closed"
        if error.startswith("refused: "):
            return "refused_" + error.removeprefix("refused: ").split(" ")[0]
        if error.startswith(("client closed", "socket: ")):
            left_after_hrr = self.hello_retry and not self.cookie_verified
            return "left_after_hrr" if left_after_hrr else "client_left"
        if error.startswith("client sent "):
            return "client_alert_" + error.removeprefix("client sent ")
        return error.split(":")[0].split(" (")[0].replace(" ", "_")

    def fields(self) -> dict[str, object]:
        """The report as flat fields, for a structured log formatter (``extra=``; the names do
        not clash with LogRecord's own): times in milliseconds, strings as the client sent them
        (a JSON formatter escapes them; the text line escapes them itself)."""
        h = self.handshake
        return {
            "peer": f"{self.peer[0]}:{self.peer[1]}",
            "via": None if self.via is None else f"{self.via[0]}:{self.via[1]}",
            "transport": self.transport,
            "validation": self.validation,
            "outcome": self.outcome,
            "hrr": self.hello_retry,
            "cookie_verified": self.cookie_verified,
            "suite": h.cipher_suite.name if h else None,
            "group": h.group.name if h and h.group else None,
            "alpn": h.alpn_protocol if h else None,
            "sni": h.server_name if h else None,
            "resumed": h.resumed if h else None,
            "psk_identity": _text(h.psk_identity) if h and h.psk_identity else None,
            "client_certificate": self._client_certificate.subject
            if self._client_certificate
            else None,
            "early_data": h.early_data if h else None,
            "handshake_ms": None if self.handshake_time is None else self.handshake_time * 1000,
            "duration_ms": self.duration * 1000,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "datagrams_in": self.datagrams_in,
            "datagrams_out": self.datagrams_out,
            "retransmissions": self.retransmissions,
            "error": self.error,
        }

    def log_line(self) -> str:
        host, port = self.peer[0], self.peer[1]
        parts = [f"peer={host}:{port}"]
        if self.via is not None:
            parts.append(f"via={self.via[0]}:{self.via[1]}")
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
                f"group={h.group.name if h.group else '-'}",
                f"alpn={_loggable(h.alpn_protocol)}",
                f"sni={_loggable(h.server_name)}",
                f"resumed={'0rtt' if h.early_data else 'yes' if h.resumed else 'no'}",
            ]
            if h.psk_identity is not None:
                parts.append(f"psk={_loggable(_text(h.psk_identity))}")
            if self._client_certificate is not None:
                parts.append(f"client={_loggable(self._client_certificate.subject)}")
        if self.handshake_time is not None:
            parts.append(f"handshake={self.handshake_time * 1000:.1f}ms")
        parts.append(f"duration={self.duration * 1000:.1f}ms")
        if self.datagrams_in is not None:
            parts.append(f"in={self.datagrams_in}/{self.bytes_in}B")
        elif self.bytes_in is not None:
            parts.append(f"in={self.bytes_in}B")
        if self.datagrams_out is not None:
            parts.append(f"out={self.datagrams_out}/{self.bytes_out}B")
        elif self.bytes_out is not None:
            parts.append(f"out={self.bytes_out}B")
        if self.retransmissions:
            parts.append(f"retransmissions={self.retransmissions}")
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)

    def log(self, log: logging.Logger = logger) -> None:
        """The connection's log line, with its fields as ``extra``: INFO, but DEBUG for a client
        that left after the HelloRetryRequest (a flood's worth of those is counted instead)."""
        level = logging.DEBUG if self.outcome == "left_after_hrr" else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "%s", self.log_line(), extra=self.fields())


class ServerStats:
    """Counters for a whole server, from its connection reports (no per-client data), and the
    periodic stat line an operator reads instead of a line per refused or abandoned client."""

    def __init__(self, transport: str = "tcp", *, proxy_protocol: bool = False) -> None:
        self.transport = transport
        #: Balancers send PROXY headers (``Limits.proxy_protocol_from``): ``proxied`` is shown.
        self.proxy_protocol = proxy_protocol
        self.proxied = 0  # connections whose PROXY header named the client
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.hello_retries = 0  # connections that got an HRR (QUIC: see its front's stats)
        self.cookies_verified = 0
        self.resumed = 0  # completed handshakes that resumed a session (a ticket)
        self.handshake_seconds = 0.0  # summed over completed handshakes
        self._since = time.monotonic()  # the last snapshot: rates are over the time since
        self._completed_before = 0
        #: More fields for the stat line, asked for at each snapshot, after the gauges: e.g. a
        #: shared replay store's state (``RedisReplayStore.stat_fields``).
        self.sources: list[Callable[[], dict[str, object]]] = []

    def record(self, report: ConnectionReport) -> None:
        self.outcomes[report.outcome] += 1
        self.hello_retries += report.hello_retry
        self.cookies_verified += report.cookie_verified
        self.resumed += report.handshake is not None and report.handshake.resumed
        self.proxied += report.via is not None
        if report.handshake is not None and report.handshake_time is not None:
            self.handshake_seconds += report.handshake_time

    @property
    def completed(self) -> int:
        return self.outcomes["completed"] + self.outcomes["failed_after_handshake"]

    def snapshot(self, **gauges: int) -> dict[str, object]:
        """Totals since start, rates since the last snapshot, and ``gauges`` (in progress...)."""
        now = time.monotonic()
        elapsed = max(now - self._since, 1e-9)
        rate = (self.completed - self._completed_before) / elapsed
        self._since, self._completed_before = now, self.completed
        refused = {
            k.removeprefix("refused_"): v
            for k, v in self.outcomes.items()
            if k.startswith("refused_")
        }
        failed = {
            k: v
            for k, v in self.outcomes.items()
            if not k.startswith("refused_") and k not in ("completed", "left_after_hrr")
        }
        mean = (
            self.handshake_seconds / self.outcomes["completed"]
            if self.outcomes["completed"]
            else 0.0
        )
        return {
            "transport": self.transport,
            "completed": self.completed,
            "completed_per_s": rate,
            "hrr": self.hello_retries,
            "cookies_verified": self.cookies_verified,
            "resumed": self.resumed,
            "left_after_hrr": self.outcomes["left_after_hrr"],
            **({"proxied": self.proxied} if self.proxy_protocol else {}),
            "refused": refused,
            "failed": failed,
            "handshake_ms_mean": mean * 1000,
            **gauges,
            **{k: v for source in self.sources for k, v in source().items()},
        }

    def log_line(self, **gauges: int) -> None:
        """Log the stat line (INFO, with the snapshot as ``extra={"stats": ...}``)."""
        snapshot = self.snapshot(**gauges)
        logging.getLogger(STATS_LOGGER).info("%s", self.line(snapshot), extra={"stats": snapshot})

    @staticmethod
    def line(snapshot: dict[str, object]) -> str:
        def counts(value: object) -> str:
            assert isinstance(value, dict)
            return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "0"

        parts = [f"stats {snapshot['transport']}:"]
        for key, value in snapshot.items():
            if key == "transport":
                continue
            if isinstance(value, dict):
                parts.append(f"{key}={counts(value)}")
            elif isinstance(value, float):
                parts.append(f"{key}={value:.1f}")
            else:
                parts.append(f"{key}={value}")
        return " ".join(parts)


def _text(identity: bytes) -> str:
    """A PSK identity as text (identities are bytes; most are ASCII names)."""
    return identity.decode("ascii", "backslashreplace")


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

    Behind a balancer (``Limits.proxy_protocol_from``) every client arrives from the balancer's
    address: its connections are counted at accept by the limits of the whole server
    (``max_connections``, ``max_concurrent_handshakes``), which its address alone must not
    exhaust either way, but not by source: the source counted is the client's, once the PROXY
    header has named it (``admit_source``), so that one client behind the balancer cannot take
    every slot, and the balancer is not capped at one client's share.  A header that names no
    client (a health check: LOCAL, UNKNOWN) counts the balancer itself.
    """

    def __init__(
        self, limits: Limits, max_connections: int, validation: Validation = Validation.HRR
    ) -> None:
        self.limits = limits
        self.max_connections = max_connections
        self.validation = Validation.parse(validation, TCP_VALIDATIONS)
        self.pressure = PressureGauge(limits.adaptive_handshakes)
        self.clock = time.monotonic  # the pressure gauge's
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

    def from_balancer(self, peer: tuple[str, int]) -> bool:
        """Whether ``peer`` is a balancer that must send a PROXY header first."""
        return trusted(peer, self.limits.proxy_protocol_from)

    def admit(self, source: str | None) -> str | None:
        """Count a new connection in, or the limit it would go over (then it is not counted).
        ``source`` None: a balancer's, counted by source once its header names the client
        (``admit_source``)."""
        limits = self.limits
        with self._lock:
            if self.open >= self.max_connections:
                return "max_connections"
            if self.handshaking >= limits.max_concurrent_handshakes:
                return "max_concurrent_handshakes"
            if source is not None and not self._source_has_room(source):
                return "max_handshakes_per_source"
            self.open += 1
            self.handshaking += 1
            if source is not None:
                self._by_source[source] = self._by_source.get(source, 0) + 1
        return None

    def admit_source(self, source: str) -> str | None:
        """Count a balancer's connection (admitted with no source) by the source its PROXY
        header named, or the limit it would go over (then it is not counted: the caller closes
        it and calls ``handshake_over(None)``)."""
        with self._lock:
            if not self._source_has_room(source):
                return "max_handshakes_per_source"
            self._by_source[source] = self._by_source.get(source, 0) + 1
        return None

    def _source_has_room(self, source: str) -> bool:
        return self._by_source.get(source, 0) < self.limits.max_handshakes_per_source

    def stateless(self) -> bool:
        """Whether the connection just admitted gets the stateless HelloRetryRequest: always
        with Validation.HRR, under pressure (handshakes in progress) with ADAPTIVE."""
        if self.validation is Validation.ADAPTIVE:
            return self.pressure(self.handshaking, self.clock())
        return self.validation is Validation.HRR

    @property
    def validating(self) -> bool:
        """Whether new connections get the stateless HRR now."""
        return self.validation is Validation.HRR or self.pressure.on

    def handshake_over(self, source: str | None) -> None:
        """The connection's handshake is over, done or failed (it keeps its open slot);
        ``source`` None: a balancer's, never counted by source."""
        with self._lock:
            self.handshaking -= 1
            if source is None:
                return
            left = self._by_source[source] - 1
            if left:
                self._by_source[source] = left
            else:
                del self._by_source[source]

    def closed(self) -> None:
        with self._lock:
            self.open -= 1


class Reporter:
    """Where every connection's report goes: the counters (``stats``), the log (a line per
    connection; refusals and clients that left after the HRR only counted, with a rate-limited
    warning for refusals) and the application's ``on_report``."""

    def __init__(
        self,
        on_report: Callable[[ConnectionReport], None] | None,
        transport: str = "tcp",
        *,
        proxy_protocol: bool = False,
    ) -> None:
        self.stats = ServerStats(transport, proxy_protocol=proxy_protocol)
        self.on_report = on_report
        self._refusals = RateLimitedWarning("connections refused at accept")
        self._bad_headers = RateLimitedWarning("bad PROXY protocol headers from balancers")

    def __call__(self, report: ConnectionReport) -> None:
        self.stats.record(report)
        if report.outcome.startswith("refused_"):  # a flood must not become a flood of lines
            self._refusals(report.error)
        elif report.outcome == "proxy_protocol":  # likewise: counted, warned of now and then
            self._bad_headers(f"{report.peer[0]}:{report.peer[1]}: {report.error}")
        else:
            report.log()
        if self.on_report is not None:
            self.on_report(report)


@dataclass(frozen=True)
class Arrival:
    """Who a connection is from: the socket's peer; or, from a balancer whose PROXY header named
    the client, that client, the balancer (``via``) and the address the client connected to
    (``destination``)."""

    peer: tuple[str, int]
    via: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None

    @classmethod
    def proxied(cls, balancer: tuple[str, int], header: ProxyHeader) -> Arrival:
        """From ``balancer``, as its ``header`` says (one that names no client, a health check,
        leaves the balancer the peer).  An IPv4-mapped IPv6 address (a TCP6 header from a
        dual-stack balancer) is the IPv4 address it is, as a direct connection's would be."""
        if header.source is None or header.destination is None:
            return cls(balancer)
        source, destination = header.source, header.destination
        return cls(
            (str(plain_address(source[0])), source[1]),
            balancer,
            (str(plain_address(destination[0])), destination[1]),
        )


class ProxyHeaderReader:
    """A balancer's connection until its PROXY header is read: what both socket loops feed it
    (``receive``), and then who the connection is from (``arrival``, ``rest``) or why it is
    closed unanswered (``error``)."""

    def __init__(self, balancer: tuple[str, int]) -> None:
        self.balancer = balancer
        self._parser = ProxyHeaderParser()
        self.arrival = Arrival(balancer)
        self.error: str | None = None

    def receive(self, data: bytes) -> bool:
        """Take what the balancer sent (``b""``: it closed); whether the header is done with:
        read (``arrival``; the bytes after it in ``rest``), or failed (``error``)."""
        if not data:  # a health check that connects and leaves, as HAProxy's plain check does
            self.error = "client closed before its PROXY protocol header"
            return True
        try:
            header = self._parser.feed(data)
        except ProxyProtocolError as error:
            self.error = f"proxy_protocol: {error}"
            return True
        if header is None:
            return False
        self.arrival = Arrival.proxied(self.balancer, header)
        return True

    @property
    def rest(self) -> bytes:
        """What came after the header: the start of the TLS stream."""
        return self._parser.rest

    def timed_out(self, seconds: float) -> None:
        self.error = f"handshake_timeout ({seconds:g}s): no complete PROXY protocol header"


class StreamState:
    """What both stream classes hold after the handshake: the connection (a MemoryServer), what
    was agreed, and the application data not yet handed to the application."""

    def __init__(
        self,
        session: MemoryServer,
        received: list[bytes],
        limits: Limits,
        arrival: Arrival,
    ) -> None:
        assert session.handshake is not None
        self._session = session
        self._limits = limits
        self._received = received  # came with the client's Finished, if any
        self._idle = False  # idle_timeout passed: the stream has ended
        self.handshake: HandshakeComplete = session.handshake
        #: The client's address and port (behind a balancer: the one its PROXY header named).
        self.peer = arrival.peer
        #: The balancer the client came through (``Limits.proxy_protocol_from``), if any.
        self.via = arrival.via
        self._destination = arrival.destination
        self._answers: list[ClientAuthenticated] = []  # to request_client_certificate

    @property
    def alpn_protocol(self) -> str | None:
        return self.handshake.alpn_protocol

    @property
    def server_name(self) -> str | None:
        return self.handshake.server_name

    @property
    def _eof(self) -> bool:
        return self._session.closed or self._idle

    @property
    def config(self) -> ServerConfig:
        return self._session.config

    @property
    def client_certificate(self) -> ClientCertificate | None:
        """The client's certificate: the handshake's, or the latest that
        ``request_client_certificate`` got."""
        connection = self._session.connection
        return None if connection is None else connection.client_certificate

    @property
    def post_handshake_auth(self) -> bool:
        """The client offered post-handshake authentication (``request_client_certificate``)."""
        connection = self._session.connection
        return connection is not None and connection.post_handshake_auth

    def _request_client_certificate(self, client_auth: ClientAuth | None) -> None:
        self._session.request_client_certificate(client_auth)
        self._answers.clear()

    def _client_answer(self) -> ClientCertificate | None:
        """The answer the stream read; ConnectionError if the connection ended instead."""
        if self._answers:
            return self._answers.pop(0).certificate
        raise NoClientCertificate(f"no client certificate: {self._session.error or 'idle'}")

    def _absorb(self, data: bytes) -> None:
        for event in self._session.receive(data):
            if isinstance(event, ApplicationData):
                self._received.append(event.data)
            elif isinstance(event, ClientAuthenticated):
                self._answers.append(event)

    def _next_chunk(self) -> bytes:
        return self._received.pop(0) if self._received else b""


def handshake_step(session: MemoryServer, data: bytes, received: list[bytes]) -> bytes:
    """One read of the handshake: feed it, keep any application data, return what to write.

    Accepted 0-RTT data (``ServerConfig.early_data``) is kept too, first, as the start of the
    stream: the application learns it was early from ``HandshakeComplete.early_data``."""
    received += [
        e.data for e in session.receive(data) if isinstance(e, ApplicationData | EarlyData)
    ]
    return session.data_to_send()
