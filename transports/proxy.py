"""A TLS front door over TCP: ``stateless13 serve --proxy-to HOST:PORT``.

Each client's TLS ends here, behind the stateless front like any other connection of
:func:`~stateless13.transports.asyncio_tcp.serve`; what it sends then goes, byte for byte, to a
new TCP connection to the backend, and what the backend sends comes back, as stunnel and hitch
do::

    server = await serve(config, tcp_proxy(Backend("127.0.0.1", 8080), proxy_protocol=True),
                         "0.0.0.0", 443, limits=Limits(idle_timeout=TUNNEL_TLS_IDLE))

How a tunnel behaves, and every bound on it:

* **Backend down**: the connect is bounded by ``connect_timeout``; a refused or timed-out connect
  sends the client close_notify (nothing was relayed, nothing is lost) and the tunnel's log line
  says why (``error='backend 127.0.0.1:8080: connect: Connection refused'``), with a warning at
  most every 10 s for an operator who logs warnings only.
* **Backpressure**: nothing more is read from one side until the other took what was read
  (``drain``): a fast sender and a slow reader hold at most one read (``read_size``) in this
  process, plus the sockets' buffers.
* **Half-close** (RFC 8446 §6.1: each direction of TLS closes on its own): the client's
  close_notify (or its EOF) becomes the backend's EOF (``write_eof``), and the response still
  comes back; the backend's EOF becomes the client's close_notify, and what the client still
  sends still goes to the backend.  The tunnel ends when both directions have.
* **Failures mid-tunnel**: the backend's reset, or a backend that takes no bytes for
  ``write_timeout``, cut the client's connection *without* close_notify, so that the client can
  tell the data was truncated; the client's reset or write timeout cut the backend's.
* **Idle**: no byte either way for ``idle_timeout`` seconds ends both (close_notify to the
  client).  The TLS stream has its own idle timeout (``Limits.idle_timeout``: seconds without a
  byte *from the client*); give ``serve`` a longer one (``TUNNEL_TLS_IDLE``, as the command does),
  or a client that only listens (a download, a feed) is taken as done sending after that long.
* **PROXY protocol** (``proxy_protocol=True``): the backend's first bytes are a PROXY protocol
  version 2 header (HAProxy's proxy-protocol.txt, section 2.2) naming the client's address and
  port and the address it connected to, with the ALPN and SNI it sent as TLVs, so that the
  backend logs and judges the client rather than the proxy (``--proxy-protocol v2``); the
  encoder lives with the parser in :mod:`~stateless13.transports.proxy_protocol`.  Behind a
  balancer of our own (``Limits.proxy_protocol_from``) the client it names is the one passed on.

One log line per tunnel on the ``stateless13.proxy`` logger (and a :class:`ProxyReport` to
``on_report``), next to the connection's own line on ``stateless13.server``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .asyncio_tcp import Handler, TLSStream
from .common import RateLimitedWarning
from .proxy_protocol import PROXY_V2_SIGNATURE, proxy_v2_header

logger = logging.getLogger("stateless13.proxy")

#: Seconds to connect to a backend, by default (TCP and HTTP/3).
CONNECT_TIMEOUT = 5.0
#: What the command gives the TLS stream as its own idle timeout (``Limits.idle_timeout``) in
#: front of a tunnel: a day, so that only the tunnel's idle timeout (both directions) applies.
TUNNEL_TLS_IDLE = 86400.0


@dataclass(frozen=True)
class Backend:
    """Where a front door forwards to."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, http: bool = False) -> Backend:
        """``HOST:PORT`` (``[::1]:8080`` for IPv6); with ``http``, also ``http://HOST[:PORT][/]``
        (port 80 by default).  ValueError says what is wrong."""
        if "://" in text:
            if not http:
                raise ValueError(f"{text!r}: give HOST:PORT (TCP pipes bytes, whatever they are)")
            parts = urlsplit(text)
            if parts.scheme != "http":
                raise ValueError(f"{text!r}: only http:// backends (HTTP/1.1 in clear text)")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{text!r}: no path: requests keep their own")
            if parts.username is not None or parts.password is not None:
                raise ValueError(f"{text!r}: no user or password in the URL")
            host, port = parts.hostname, parts.port if parts.port is not None else 80
        else:
            host_text, colon, port_text = text.rpartition(":")
            if not colon or not port_text.isdigit():
                raise ValueError(f"{text!r}: give HOST:PORT")
            host, port = host_text.removeprefix("[").removesuffix("]"), int(port_text)
        if not host:
            raise ValueError(f"{text!r}: no host")
        if not 0 < port <= 65535:
            raise ValueError(f"{text!r}: {port} is not a port")
        return cls(host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# ---------------------------------------------------------------------------------------------
# The tunnel


@dataclass(frozen=True)
class ProxyReport:
    """One tunnel: who, where to, how many bytes each way, how it ended."""

    peer: tuple[str, int]
    backend: Backend
    bytes_up: int  # client to backend (application data, PROXY header excluded)
    bytes_down: int  # backend to client
    duration: float  # seconds from the handshake's end to the tunnel's
    #: How it ended: ``closed`` (both directions closed), ``idle``, ``backend_down``,
    #: ``backend_error``, ``client_error``, ``cancelled`` (the server cut it: a second stop
    #: signal, or ``--stop-timeout`` over).
    end: str
    error: str | None = None

    def log_line(self) -> str:
        parts = [
            f"proxy peer={self.peer[0]}:{self.peer[1]}",
            f"backend={self.backend}",
            f"up={self.bytes_up}B",
            f"down={self.bytes_down}B",
            f"duration={self.duration * 1000:.1f}ms",
            f"end={self.end}",
        ]
        if self.error is not None:
            parts.append(f"error={self.error!r}")
        return " ".join(parts)


class _BackendFailed(Exception):
    """The backend failed (reset, write timeout): the reason, for the report."""


def tcp_proxy(
    backend: Backend,
    *,
    proxy_protocol: bool = False,
    connect_timeout: float = CONNECT_TIMEOUT,
    idle_timeout: float = 300.0,
    write_timeout: float = 30.0,
    read_size: int = 65536,
    on_report: Callable[[ProxyReport], None] | None = None,
) -> Handler:
    """A handler for :func:`~stateless13.transports.asyncio_tcp.serve` that pipes each client's
    bytes to ``backend`` and back (the module's docstring has the rules).

    ``connect_timeout``: seconds for the backend's TCP connect; ``idle_timeout``: seconds without
    a byte either way before the tunnel is closed; ``write_timeout``: seconds the backend may
    take no bytes before the tunnel is cut (the client's own is ``Limits.write_timeout``);
    ``read_size``: the most read from either side at a time.
    """
    if min(connect_timeout, idle_timeout, write_timeout) <= 0 or read_size < 1:
        raise ValueError("timeouts and read_size must be positive")
    down_warning = RateLimitedWarning(f"backend {backend} unreachable")

    async def handler(stream: TLSStream) -> None:
        tunnel = _Tunnel(stream, backend, idle_timeout, write_timeout, read_size)
        try:
            await tunnel.run(connect_timeout, proxy_protocol)
        finally:
            report = tunnel.report()
            if report.end == "backend_down":
                down_warning(report.error)
            if logger.isEnabledFor(logging.INFO):
                logger.info("%s", report.log_line())
            if on_report is not None:
                on_report(report)

    return handler


class _Tunnel:
    """One client's tunnel: the two pumps, the idle watch, how it ended."""

    def __init__(
        self,
        stream: TLSStream,
        backend: Backend,
        idle_timeout: float,
        write_timeout: float,
        read_size: int,
    ) -> None:
        self.stream = stream
        self.backend = backend
        self.idle_timeout = idle_timeout
        self.write_timeout = write_timeout
        self.read_size = read_size
        self.started = time.monotonic()
        self.last_activity = self.started
        self.bytes_up = 0
        self.bytes_down = 0
        self.end = "closed"
        self.error: str | None = None

    def report(self) -> ProxyReport:
        duration = time.monotonic() - self.started
        return ProxyReport(
            self.stream.peer,
            self.backend,
            self.bytes_up,
            self.bytes_down,
            duration,
            self.end,
            self.error,
        )

    async def run(self, connect_timeout: float, proxy_protocol: bool) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.backend.host, self.backend.port), connect_timeout
            )
        except TimeoutError:
            await self._backend_down(f"connect timeout ({connect_timeout:g}s)")
            return
        except OSError as error:
            await self._backend_down(f"connect: {_reason(error)}")
            return
        try:
            if proxy_protocol:
                writer.write(self._proxy_header())
            await self._pump(reader, writer)
        except asyncio.CancelledError:  # the server is cutting every connection
            self.end = "cancelled"
            raise
        finally:
            if self.end == "closed":
                writer.close()  # both directions are done: nothing is left either way
            else:
                writer.transport.abort()  # what the backend has not taken is of no use now

    async def _backend_down(self, reason: str) -> None:
        """Nothing was relayed: close_notify tells the client so, cleanly."""
        self.end, self.error = "backend_down", f"backend {self.backend}: {reason}"
        await self.stream.close()

    def _proxy_header(self) -> bytes:
        return proxy_v2_header(
            self.stream.peer,
            self.stream.local_address,
            alpn=self.stream.alpn_protocol,
            authority=self.stream.server_name,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = asyncio.create_task(self._up(writer))
        down = asyncio.create_task(self._down(reader))
        pending: set[asyncio.Task[None]] = {up, down}
        try:
            while pending:
                left = self.idle_timeout - (time.monotonic() - self.last_activity)
                if left <= 0:
                    self.end = "idle"
                    self.error = f"idle_timeout ({self.idle_timeout:g}s)"
                    await self.stream.close()  # close_notify, then the socket
                    return
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    error = task.exception()
                    if isinstance(error, _BackendFailed):
                        # A cut without close_notify: the client can tell the data is truncated.
                        self.end, self.error = "backend_error", f"backend {self.backend}: {error}"
                        self.stream.abort()
                        return
                    if error is not None:  # the client's socket: the server reports it too
                        self.end, self.error = "client_error", f"client: {error}"
                        raise error
            await self.stream.close()  # both directions are closed: the socket goes too
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)

    async def _up(self, writer: asyncio.StreamWriter) -> None:
        """Client to backend, until the client closes its side (close_notify, EOF)."""
        while data := await self.stream.read():
            self.last_activity = time.monotonic()
            self.bytes_up += len(data)
            writer.write(data)
            await self._drain(writer)
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError as error:  # the backend is gone: nothing more goes to it anyway
                logger.debug("write_eof to %s: %s", self.backend, error)

    async def _down(self, reader: asyncio.StreamReader) -> None:
        """Backend to client, until the backend closes its side (then close_notify)."""
        while True:
            try:
                data = await reader.read(self.read_size)
            except OSError as error:
                raise _BackendFailed(_reason(error)) from None
            if not data:
                break
            self.last_activity = time.monotonic()
            self.bytes_down += len(data)
            self.stream.write(data)
            await self.stream.drain()  # WriteTimeout (a ConnectionError) if the client stalls
        self.stream.close_write()

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """What asyncio's drain() does, bounded by ``write_timeout``."""
        if (
            writer.transport.get_write_buffer_size()
            <= writer.transport.get_write_buffer_limits()[1]
        ):
            return  # drain() would not wait (a timer and a task each write, spared)
        try:
            await asyncio.wait_for(writer.drain(), self.write_timeout)
        except TimeoutError:
            raise _BackendFailed(
                f"write_timeout ({self.write_timeout:g}s): the backend stopped reading"
            ) from None
        except OSError as error:
            raise _BackendFailed(_reason(error)) from None


def _reason(error: OSError) -> str:
    """The system's words for ``error`` ("Connection refused")."""
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or str(error) or type(error).__name__


__all__ = [
    "CONNECT_TIMEOUT",
    "PROXY_V2_SIGNATURE",
    "TUNNEL_TLS_IDLE",
    "Backend",
    "ProxyReport",
    "proxy_v2_header",
    "tcp_proxy",
]
