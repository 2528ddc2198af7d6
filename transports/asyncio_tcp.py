"""An asyncio TLS 1.3 server with a stateless front, shaped like ``asyncio.start_server``.

    server = await serve(config, handler, "127.0.0.1", 8443)
    async with server:
        await server.serve_forever()

``handler(stream)`` gets a :class:`TLSStream` once the handshake completes. Between the
HelloRetryRequest and ClientHello2 a client costs the socket, its unread bytes and one bit: the
per-connection layer is :class:`~stateless13.transports.memory.MemoryServer`; this module only
moves bytes between it and asyncio's streams.

Behind a TCP balancer (``Limits.proxy_protocol_from``) a balancer's connection starts with a
PROXY protocol header, read first (``common.ProxyHeaderReader``): the client it names is the
peer from then on, for the cookie, the per-source limit, the report and ``TLSStream.peer``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

from stateless13 import ClientAuth, ClientCertificate, ServerConfig

from .common import (
    TCP_VALIDATIONS,
    Admission,
    Arrival,
    ConnectionReport,
    Limits,
    ProxyHeaderReader,
    RateLimitedWarning,
    Reporter,
    ServerStats,
    StreamState,
    Validation,
    WriteTimeout,
    connection_budget,
    default_backlog,
    handshake_step,
)
from .memory import MemoryServer

logger = logging.getLogger("stateless13.server")

Handler = Callable[["TLSStream"], Awaitable[None]]
ReportCallback = Callable[[ConnectionReport], None]


class TLSStream(StreamState):
    """The application's side of one TLS connection: read, write, close, and what was agreed
    (``handshake``: the HandshakeComplete event; ``peer``, ``alpn_protocol``, ``server_name``;
    ``via``: the balancer, behind one that sent a PROXY header)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: MemoryServer,
        received: list[bytes],
        limits: Limits,
        arrival: Arrival | None = None,
    ) -> None:
        if arrival is None:
            arrival = Arrival(writer.get_extra_info("peername")[:2])
        super().__init__(session, received, limits, arrival)
        self._reader = reader
        self._writer = writer
        self._waiting = False  # the application waits in read() for the client: idle
        self._stopping = False  # the server is stopping: read() returns b"" from now on

    async def read(self) -> bytes:
        """The next application data; ``b""`` once the client closed, failed or went idle, or
        the server is stopping."""
        while not self._received and not self._eof and not self._stopping:
            await self._read_once(idle=True)
        return self._next_chunk()

    async def _read_once(self, *, idle: bool) -> None:
        """One read from the client, taken in (and answered); idle after ``idle_timeout``.
        ``idle``: the application waits for the client and nothing else, so a stopping server
        may end the connection now (``_stop``)."""
        self._waiting = idle
        try:
            data = await asyncio.wait_for(
                self._reader.read(self._limits.read_size), self._limits.idle_timeout
            )
        except TimeoutError:
            self._idle = True
            return
        finally:
            self._waiting = False
        if not self._stopping:
            self._absorb(data)
            self._flush()

    def _stop(self) -> None:
        """The server is stopping: an idle connection gets close_notify now and its read()
        returns b""; a busy one finishes what it is writing and sees b"" at its next read."""
        self._stopping = True
        if self._waiting and not self._received:
            self._session.close()
            self._flush()
            # Read no more: the stream ends here, and a client's next bytes, already on their
            # way, would otherwise reach a reader at EOF (asyncio: "feed_data after feed_eof").
            transport = self._writer.transport
            if isinstance(transport, asyncio.Transport):  # a socket's: it reads too
                transport.pause_reading()
            self._reader.feed_eof()

    def write(self, data: bytes) -> None:
        self._session.send(data)
        self._flush()

    async def request_client_certificate(
        self, client_auth: ClientAuth | None = None
    ) -> ClientCertificate | None:
        """Ask the client for a certificate now (RFC 8446 §4.6.2; only if it offered
        post-handshake authentication: ``post_handshake_auth``) and wait for its answer: the
        certificate, verified by ``client_auth`` (default ``ServerConfig.client_auth``), or None
        if it declined and may.  Application data that comes meanwhile waits for read().
        ConnectionError if the connection ends first (a certificate refused: its alert was
        sent), or the client answers nothing for ``idle_timeout``: NoClientCertificate."""
        self._request_client_certificate(client_auth)
        self._flush()
        while not self._answers and not self._eof and not self._stopping:
            await self._read_once(idle=False)
        return self._client_answer()

    def update_key(self, request_peer_update: bool = True) -> None:
        """Send a KeyUpdate (RFC 8446 §4.6.3) and move to our next sending key; with
        ``request_peer_update`` the client must answer with its own."""
        self._session.update_key(request_peer_update)
        self._flush()

    async def drain(self) -> None:
        """Wait until the client takes what was written; WriteTimeout (the connection is cut)
        if it takes nothing for ``Limits.write_timeout`` seconds."""
        try:
            await asyncio.wait_for(self._writer.drain(), self._limits.write_timeout)
        except TimeoutError:
            self._writer.transport.abort()
            raise WriteTimeout(self._limits.write_timeout) from None

    @property
    def local_address(self) -> tuple[str, int]:
        """The address the client connected to: this socket's own, or, behind a balancer, the
        one its PROXY header names."""
        if self._destination is not None:
            return self._destination
        sockname = self._writer.get_extra_info("sockname")
        return sockname[0], sockname[1]

    def close_write(self) -> None:
        """Send close_notify and keep reading: TLS 1.3 closes each direction on its own (RFC
        8446 §6.1), so what the client still sends arrives (``close`` ends both)."""
        self._session.close()
        self._flush()

    def abort(self) -> None:
        """Cut the connection without close_notify: the client can tell it was truncated."""
        self._writer.transport.abort()

    async def close(self) -> None:
        """Send close_notify and close the socket (cut after ``write_timeout`` if the client
        does not take the rest)."""
        self._session.close()
        self._flush()
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), self._limits.write_timeout)
        except TimeoutError:
            self._writer.transport.abort()
        except OSError:
            pass

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)


class _Front:
    """Accepts connections, runs the stateless front and hands completed ones to the handler."""

    def __init__(
        self,
        config: ServerConfig,
        handler: Handler,
        limits: Limits,
        validation: Validation,
        on_report: ReportCallback | None,
        max_connections: int,
    ) -> None:
        self.config = config
        self.handler = handler
        self.limits = limits
        self.admission = Admission(limits, max_connections, validation)
        self.report = Reporter(on_report, proxy_protocol=bool(limits.proxy_protocol_from))
        self.writers: set[asyncio.StreamWriter] = set()  # every connection open
        self.streams: set[TLSStream] = set()  # those past their handshake
        self.stopping = False

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer: tuple[str, int] = writer.get_extra_info("peername")[:2]
        # A balancer's connection is counted by source once its PROXY header names the client.
        source = None if self.admission.from_balancer(peer) else self.admission.source(peer)
        full = "stopping" if self.stopping else self.admission.admit(source)
        if full is not None:
            writer.close()  # refused before reading a byte: nothing is spent on it
            self.report(ConnectionReport.refused(peer, full))
            return
        self.writers.add(writer)
        try:
            await self._serve(reader, writer, peer, source, self.admission.stateless())
        except asyncio.CancelledError:
            # The server is stopping.  Ending the task normally spares Python 3.11's
            # StreamReaderProtocol a traceback per connection for a cancelled task.
            writer.transport.abort()
        finally:
            self.admission.closed()
            self.writers.discard(writer)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: tuple[str, int],
        source: str | None,
        stateless: bool,
    ) -> None:
        """``source`` None: from a balancer, whose PROXY header comes first."""
        started = time.monotonic()
        arrival, first = Arrival(peer), b""
        if source is None:
            proxied = await self._proxy_header(reader, writer, peer, started)
            if proxied is None:
                return  # closed, and reported
            arrival, source, first = proxied
        handshake_time: float | None = None
        session = MemoryServer(
            self.config,
            stateless=stateless,
            peer=arrival.peer,
            max_handshake_buffer=self.limits.max_handshake_buffer,
        )
        error: str | None = None
        try:
            try:
                # The header, if any, took its part of the one handshake_timeout.
                left = self.limits.handshake_timeout - (time.monotonic() - started)
                received = await asyncio.wait_for(
                    self._handshake(session, reader, writer, first), max(left, 0.0)
                )
            finally:
                self.admission.handshake_over(source)
                handshake_time = time.monotonic() - started
            if session.handshake is not None:
                stream = TLSStream(reader, writer, session, received, self.limits, arrival)
                self.streams.add(stream)
                if self.stopping:
                    stream._stop()
                try:
                    await self.handler(stream)
                except ConnectionError:  # the client went away or stopped reading: not a bug
                    raise
                except Exception as exc:  # the application's bug: log it, close this one only
                    logger.exception("handler failed for %s:%s", *arrival.peer)
                    error = f"handler: {exc!r}"
                finally:
                    self.streams.discard(stream)
        except TimeoutError:
            error = f"handshake_timeout ({self.limits.handshake_timeout:g}s)"
        except WriteTimeout as exc:
            error = str(exc)
        except (ConnectionError, OSError) as exc:
            error = f"socket: {exc}"
        finally:
            if not writer.is_closing():
                writer.close()
            report = ConnectionReport.of(
                session, arrival.peer, started, handshake_time, error, via=arrival.via
            )
            self.report(report)

    async def _proxy_header(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        balancer: tuple[str, int],
        started: float,
    ) -> tuple[Arrival, str, bytes] | None:
        """A balancer's connection: its PROXY header, within the handshake timeout, and the
        client it names counted by source.  Who the connection is from, its source and the bytes
        after the header; or None once it is closed (no TLS alert: TLS has not begun) and
        reported: no valid header, none in time, or the client over its per-source limit."""
        reading = ProxyHeaderReader(balancer)
        counted = False
        try:
            try:
                async with asyncio.timeout(self.limits.handshake_timeout):
                    while not reading.receive(await reader.read(self.limits.read_size)):
                        pass
            except TimeoutError:
                reading.timed_out(self.limits.handshake_timeout)
            except OSError as exc:  # ConnectionResetError and its kind
                reading.error = f"socket: {exc}"
            if reading.error is not None:
                writer.close()
                self.report(ConnectionReport.before_tls(balancer, started, reading.error))
                return None
            arrival = reading.arrival
            source = self.admission.source(arrival.peer)
            full = self.admission.admit_source(source)
            if full is not None:
                writer.close()
                self.report(ConnectionReport.refused(arrival.peer, full, arrival.via))
                return None
            counted = True
            return arrival, source, reading.rest
        finally:
            if not counted:  # its handshake is over before it began (or the server stops)
                self.admission.handshake_over(None)

    async def _handshake(
        self,
        session: MemoryServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes = b"",
    ) -> list[bytes]:
        """Until the handshake is complete or the client is gone; the application data that came
        with the client's Finished.  ``first``: bytes read already (after a PROXY header)."""
        received: list[bytes] = []
        if first:
            writer.write(handshake_step(session, first, received))
            await writer.drain()
        while session.handshake is None and not session.closed:
            data = await reader.read(self.limits.read_size)
            writer.write(handshake_step(session, data, received))
            await writer.drain()
        return received


def quiet_accept_failures(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio logs a traceback for every accept() that fails for want of descriptors (then
    waits a second and retries, which is right); count those and warn once in a while instead,
    and leave every other report to the handler the loop had."""
    previous = loop.get_exception_handler()
    if getattr(previous, "quiets_accept_failures", False):
        return
    warn = RateLimitedWarning("accept() out of descriptors or memory, retrying in 1 s")

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            warn(context.get("exception"))
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler.quiets_accept_failures = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


class TLSServer:
    """What ``serve`` returns: asyncio's server (``sockets``, ``serve_forever``, ``async with``)
    and a graceful ``stop``."""

    def __init__(self, server: asyncio.Server, front: _Front) -> None:
        self.server = server
        self._front = front

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self.server.sockets

    @property
    def stats(self) -> ServerStats:
        """Counters of every connection so far (``log_stats`` logs them as one line)."""
        return self._front.report.stats

    def log_stats(self) -> None:
        """Log the stat line: totals, the rate since the last line, and what is open now."""
        admission = self._front.admission
        self.stats.log_line(
            in_progress=admission.handshaking,
            open=admission.open,
            validating=int(admission.validating),
        )

    async def serve_forever(self) -> None:
        await self.server.serve_forever()

    async def __aenter__(self) -> TLSServer:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        await self.server.__aexit__(*exc_info)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting; send close_notify to idle connections at once; let the others finish
        what they are writing for up to ``timeout`` seconds, then cut them.  Twice is harmless;
        ``abort()`` cuts everything at once."""
        front = self._front
        front.stopping = True
        self.server.close()
        for stream in list(front.streams):
            stream._stop()
        for writer in list(front.writers):  # still handshaking: nobody is served there yet
            if not any(s._writer is writer for s in front.streams):
                writer.transport.abort()
        deadline = asyncio.get_running_loop().time() + timeout
        while front.admission.open and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        self.abort()

    def abort(self) -> None:
        """Cut every connection now (a second stop signal)."""
        self._front.stopping = True
        self.server.close()
        for writer in list(self._front.writers):
            writer.transport.abort()


async def serve(
    config: ServerConfig,
    handler: Handler,
    host: str | None = "127.0.0.1",
    port: int = 0,
    *,
    limits: Limits | None = None,
    validation: Validation | str = Validation.ADAPTIVE,
    on_report: ReportCallback | None = None,
    **server_options: object,
) -> TLSServer:
    """Start a TLS 1.3 server; like ``asyncio.start_server`` but ``handler`` takes a TLSStream.

    ``validation``: ``"adaptive"`` (the default: the stateless HelloRetryRequest only while
    more than ``limits.adaptive_handshakes`` connections are handshaking, an ordinary 1-RTT
    handshake otherwise), ``"hrr"`` (always) or ``"none"`` (ordinary handshakes: an HRR only
    when the key shares do not fit).
    ``on_report`` receives a :class:`ConnectionReport` per connection (also logged at INFO on
    the ``stateless13.server`` logger).  ``limits.proxy_protocol_from``: the TCP balancers whose
    connections start with a PROXY protocol header naming the client (off by default).  Extra
    keyword arguments go to ``asyncio.start_server`` (e.g. ``reuse_port=True``; ``backlog``
    defaults to ``default_backlog()``: 511 unless descriptors are scarce).
    """
    backlog = server_options.setdefault("backlog", default_backlog())
    assert isinstance(backlog, int)
    limits = limits or Limits()
    front = _Front(
        config,
        handler,
        limits,
        Validation.parse(validation, TCP_VALIDATIONS),
        on_report,
        connection_budget(limits, backlog),
    )
    quiet_accept_failures(asyncio.get_running_loop())
    server = await asyncio.start_server(front.accept, host, port, **server_options)  # type: ignore[arg-type]
    return TLSServer(server, front)
