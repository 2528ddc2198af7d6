"""An asyncio DTLS 1.3 server (RFC 9147) on one UDP socket, with the stateless listener in front.

::

    server = await serve_dtls(config, "127.0.0.1", 4444, on_report=print)   # echo by default
    async with server:
        await server.serve_forever()

The server is a :class:`~.dtls_memory.DtlsMemoryServer` (the listener, the associations, their
timers and reports) and a socket: this module moves datagrams between the two, keeps one event
loop timer at the memory server's next deadline, and hands application data to the handler.

The socket is read with ``loop.add_reader`` and up to READ_BATCH ``recvfrom`` calls per wakeup,
not through asyncio's datagram transport: that one reads a single datagram per turn of the event
loop, which cost about 31 µs per reply on this machine against about 6.5 µs drained in batches
(the whole of an HRR costs the listener 16 µs compiled), and a flood of ClientHellos is what
this server must absorb.  Sends go straight to the socket; one that would block is dropped and
counted, as a datagram lost on the way (the peers retransmit; a queue would be memory a flood
fills).
Reports are logged like the TCP and QUIC servers' (``transport=dtls``), with the same stat line.

The application is a function called with each datagram of application data and a ``send``
that answers on the same association (:func:`echo_datagram` by default).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from stateless13 import ApplicationData, DtlsListener, DtlsListenerLimits, Event, ServerConfig

from .common import UDP_RECEIVE_BUFFER, ConnectionReport, Reporter, set_receive_buffer
from .dtls_memory import DtlsMemoryServer, DtlsOptions, Peer

logger = logging.getLogger("stateless13.server")

#: The application: called with each datagram the client sent, and a function that sends one
#: datagram back on the same association.
DatagramHandler = Callable[[bytes, Callable[[bytes], None]], None]


def echo_datagram(data: bytes, send: Callable[[bytes], None]) -> None:
    """``serve --dtls``'s application: each datagram back as it came."""
    send(data)


#: Datagrams read per wakeup of the event loop, at most (timers and other tasks get their turn).
READ_BATCH = 64


class DtlsServer:
    """The UDP endpoint around a :class:`DtlsMemoryServer`, on a bound non-blocking socket."""

    def __init__(
        self,
        config: ServerConfig,
        sock: socket.socket,
        *,
        handler: DatagramHandler = echo_datagram,
        limits: DtlsListenerLimits | None = None,
        options: DtlsOptions | None = None,
        on_report: Callable[[ConnectionReport], None] | None = None,
        clock: Callable[[], float] = time.time,
        receive_buffer: int = UDP_RECEIVE_BUFFER,
    ) -> None:
        self.report = Reporter(on_report, transport="dtls")
        self.endpoint = DtlsMemoryServer(
            config, limits=limits, options=options, on_report=self.report
        )
        self.handler = handler
        self._clock = clock  # seconds since the epoch: the cookies' clock (a fleet shares it)
        self._sock = sock
        sock.setblocking(False)
        #: The UDP socket's receive buffer as the kernel set it.
        self.receive_buffer = set_receive_buffer(sock, receive_buffer)
        #: Datagrams not sent because the socket's send buffer was full.
        self.send_drops = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop = asyncio.get_running_loop()
        self._closed = self._loop.create_future()
        self._loop.add_reader(sock.fileno(), self._read)

    @property
    def listener(self) -> DtlsListener:
        return self.endpoint.listener

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def connections(self) -> int:
        return self.endpoint.connections

    def _read(self) -> None:
        """Up to READ_BATCH datagrams, each to the memory server, what it says sent."""
        sock, endpoint = self._sock, self.endpoint
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error for an earlier send: nothing to read
                continue
            now = self._clock()
            self._dispatch(endpoint.receive(data, (str(addr[0]), int(addr[1])), now), now)

    def _dispatch(self, events: list[tuple[Peer, Event]], now: float) -> None:
        """Hand application data to the handler, send what is queued, set the timer."""
        endpoint = self.endpoint
        for peer, event in events:
            if not isinstance(event, ApplicationData) or endpoint.connection(peer) is None:
                continue

            def send(data: bytes, peer: Peer = peer) -> None:
                # Whenever the handler calls it (now, or later from a task of its own).
                if endpoint.connection(peer) is not None:
                    endpoint.send(peer, data, self._clock())
                    self._send_queued()

            try:
                self.handler(event.data, send)
            except Exception:  # the application's bug ends its association, not the server
                logger.exception("DTLS handler failed for %s:%d", *peer)
                endpoint.close(peer, now, "application error")
        self._send_queued()

    def _send_queued(self) -> None:
        """What the memory server queued, to the socket; then the timer at its next deadline."""
        for datagram, peer in self.endpoint.datagrams_to_send():
            try:
                self._sock.sendto(datagram, peer)
            except (BlockingIOError, InterruptedError):
                self.send_drops += 1  # a full send buffer: lost, as on the way
            except OSError:
                pass  # the socket is closed, or the peer unreachable: lost as well
        self._set_timer()

    def _set_timer(self) -> None:
        when = self.endpoint.next_timer()
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, when - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        now = self._clock()
        self._dispatch(self.endpoint.handle_timers(now), now)

    def log_stats(self) -> None:
        stats = self.endpoint.listener.stats
        self.report.stats.log_line(
            hrr_sent=stats.hello_retries,
            dropped=sum(stats.dropped.values()) + self.endpoint.refused,
            in_progress=self.endpoint.handshakes_in_progress,
            open=self.connections,
        )

    def close(self) -> None:
        """close_notify to every association (each reported), then close the socket."""
        if self._closed.done():
            return
        self.endpoint.close_all(self._clock())
        self._dispatch([], self._clock())
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        await asyncio.shield(self._closed)

    async def __aenter__(self) -> DtlsServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()


async def serve_dtls(
    config: ServerConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    handler: DatagramHandler = echo_datagram,
    limits: DtlsListenerLimits | None = None,
    options: DtlsOptions | None = None,
    on_report: Callable[[ConnectionReport], None] | None = None,
    reuse_port: bool = False,
) -> DtlsServer:
    """Serve DTLS 1.3 on ``host``:``port`` (UDP; 0 picks a free port: ``server.address``).

    Every new client proves its address with the stateless HelloRetryRequest first (RFC 9147
    §5.1: "the default SHOULD be that the exchange is performed").  ``handler`` gets each
    datagram of application data and a ``send`` for the answer (default: echo).
    ``on_report`` gets one :class:`ConnectionReport` per association (also logged).
    """
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (
        await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return DtlsServer(
        config, sock, handler=handler, limits=limits, options=options, on_report=on_report
    )


__all__ = ["DatagramHandler", "DtlsOptions", "DtlsServer", "echo_datagram", "serve_dtls"]
