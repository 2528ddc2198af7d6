"""An asyncio DTLS 1.3 server (RFC 9147) on one UDP socket, with the stateless listener in front.

::

    server = await serve_dtls(config, "127.0.0.1", 4444, on_report=print)   # echo by default
    async with server:
        await server.serve_forever()

The server is a :class:`~.dtls_memory.DtlsMemoryServer` (the listener, the associations, their
timers and reports) and a socket: this module moves datagrams between the two, keeps one event
loop timer at the memory server's next deadline, and hands application data to the handler.
Reports are logged like the TCP and QUIC servers' (``transport=dtls``), with the same stat line.

The application is a function called with each datagram of application data and a ``send``
that answers on the same association (:func:`echo_datagram` by default).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from stateless13 import ApplicationData, DtlsListener, DtlsListenerLimits, Event, ServerConfig

from .common import ConnectionReport, Reporter, set_receive_buffer
from .dtls_memory import DtlsMemoryServer, DtlsOptions, Peer

logger = logging.getLogger("stateless13.server")

#: The UDP socket's receive buffer asked for (as the QUIC server's): the kernel's default
#: (208 KiB) drops most of a burst before the event loop reads any.
RECEIVE_BUFFER = 7 << 20

#: The application: called with each datagram the client sent, and a function that sends one
#: datagram back on the same association.
DatagramHandler = Callable[[bytes, Callable[[bytes], None]], None]


def echo_datagram(data: bytes, send: Callable[[bytes], None]) -> None:
    """``serve --dtls``'s application: each datagram back as it came."""
    send(data)


class DtlsServer(asyncio.DatagramProtocol):
    """The UDP endpoint around a :class:`DtlsMemoryServer`."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        handler: DatagramHandler = echo_datagram,
        limits: DtlsListenerLimits | None = None,
        options: DtlsOptions | None = None,
        on_report: Callable[[ConnectionReport], None] | None = None,
        clock: Callable[[], float] = time.time,
        receive_buffer: int = RECEIVE_BUFFER,
    ) -> None:
        self.report = Reporter(on_report, transport="dtls")
        self.endpoint = DtlsMemoryServer(
            config, limits=limits, options=options, on_report=self.report
        )
        self.handler = handler
        self._clock = clock  # seconds since the epoch: the cookies' clock (a fleet shares it)
        self._transport: asyncio.DatagramTransport | None = None
        self._receive_buffer = receive_buffer
        #: The UDP socket's receive buffer as the kernel set it.
        self.receive_buffer = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = asyncio.get_running_loop().create_future()

    @property
    def listener(self) -> DtlsListener:
        return self.endpoint.listener

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    @property
    def connections(self) -> int:
        return self.endpoint.connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.receive_buffer = set_receive_buffer(sock, self._receive_buffer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self._closed.done():
            self._closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        now = self._clock()
        self._dispatch(self.endpoint.receive(data, (str(addr[0]), int(addr[1])), now), now)

    def _dispatch(self, events: list[tuple[Peer, Event]], now: float) -> None:
        """Hand application data to the handler, send what is queued, set the timer."""
        endpoint = self.endpoint
        for peer, event in events:
            if not isinstance(event, ApplicationData) or endpoint.connection(peer) is None:
                continue

            def send(data: bytes, peer: Peer = peer) -> None:
                endpoint.send(peer, data, self._clock())

            try:
                self.handler(event.data, send)
            except Exception:  # the application's bug ends its association, not the server
                logger.exception("DTLS handler failed for %s:%d", *peer)
                endpoint.close(peer, now, "application error")
        transport = self._transport
        for datagram, peer in endpoint.datagrams_to_send():
            if transport is not None and not transport.is_closing():
                transport.sendto(datagram, peer)
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
        self.endpoint.close_all(self._clock())
        self._dispatch([], self._clock())
        if self._transport is not None:
            self._transport.close()

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
    _, server = await loop.create_datagram_endpoint(
        lambda: DtlsServer(
            config, handler=handler, limits=limits, options=options, on_report=on_report
        ),
        local_addr=(host, port),
        reuse_port=reuse_port or None,
    )
    return server


__all__ = ["DatagramHandler", "DtlsOptions", "DtlsServer", "echo_datagram", "serve_dtls"]
