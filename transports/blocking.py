"""Blocking sockets: wrap one connected socket, or run a thread-per-connection server.

    stream = accept_tls(sock, config)          # the stateless front, then the handshake
    stream.sendall(b"hi"); data = stream.recv()

    server = serve(config, handler, "127.0.0.1", 8443)   # handler(stream) runs in a thread
    server.serve_forever()

Like the asyncio adapter, the per-connection layer is
:class:`~stateless13.transports.memory.MemoryServer`: between the HelloRetryRequest and
ClientHello2 a client costs its socket, unread bytes and a bit.

Behind a TCP balancer (``Limits.proxy_protocol_from``), both here and in ``accept_tls``, a
balancer's connection starts with a PROXY protocol header naming the client, as in the asyncio
adapter (``common.ProxyHeaderReader`` reads it for both).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from stateless13 import ClientAuth, ClientCertificate, ServerConfig

from .common import (
    Admission,
    Arrival,
    ConnectionReport,
    HandshakeError,
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
from .proxy_protocol import trusted

logger = logging.getLogger("stateless13.server")


class BlockingTLSStream(StreamState):
    """A TLS connection over a blocking socket, after its handshake (``handshake``, ``peer``,
    ``alpn_protocol``, ``server_name`` say what was agreed; ``via``: the balancer, behind one
    that sent a PROXY header)."""

    def __init__(
        self,
        sock: socket.socket,
        session: MemoryServer,
        received: list[bytes],
        limits: Limits,
        arrival: Arrival | None = None,
    ) -> None:
        super().__init__(session, received, limits, arrival or Arrival(sock.getpeername()[:2]))
        self.socket = sock

    def recv(self) -> bytes:
        """The next application data; ``b""`` once the client closed, failed or went idle."""
        while not self._received and not self._eof:
            self._read_once()
        return self._next_chunk()

    def _read_once(self) -> None:
        """One read from the client, taken in (and answered); idle after ``idle_timeout``."""
        self.socket.settimeout(self._limits.idle_timeout)
        try:
            data = self.socket.recv(self._limits.read_size)
        except TimeoutError:
            self._idle = True
            return
        self._absorb(data)
        self._flush()

    def request_client_certificate(
        self, client_auth: ClientAuth | None = None
    ) -> ClientCertificate | None:
        """Ask the client for a certificate now and wait for its answer (RFC 8446 §4.6.2): as
        ``TLSStream.request_client_certificate``."""
        self._request_client_certificate(client_auth)
        self._flush()
        while not self._answers and not self._eof:
            self._read_once()
        return self._client_answer()

    def sendall(self, data: bytes) -> None:
        self._session.send(data)
        self._flush()

    def close(self) -> None:
        """Send close_notify and close the socket."""
        try:
            self._session.close()
            self._flush()
        except OSError:
            pass
        finally:
            self.socket.close()

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data:
            self.socket.settimeout(self._limits.write_timeout)
            try:
                self.socket.sendall(data)
            except TimeoutError:
                raise WriteTimeout(self._limits.write_timeout) from None


def accept_tls(
    sock: socket.socket,
    config: ServerConfig,
    *,
    stateless: bool = True,
    limits: Limits | None = None,
) -> BlockingTLSStream:
    """Run the handshake on a connected socket; raise HandshakeError if it does not complete
    (our alert, if any, has been sent).  From a balancer of ``limits.proxy_protocol_from``, its
    PROXY header first (HandshakeError, with no alert, if it sends none that is valid)."""
    limits = limits or Limits()
    peer: tuple[str, int] = sock.getpeername()[:2]
    deadline = time.monotonic() + limits.handshake_timeout
    arrival, first = Arrival(peer), b""
    if trusted(peer, limits.proxy_protocol_from):
        arrival, first = _read_proxy_header(sock, peer, limits, deadline)
    session = _session(config, arrival.peer, stateless, limits)
    received = _handshake(sock, session, limits, first, deadline)
    if session.handshake is None:
        raise HandshakeError(session.error or "the handshake did not complete")
    return BlockingTLSStream(sock, session, received, limits, arrival)


def _session(
    config: ServerConfig, peer: tuple[str, int], stateless: bool, limits: Limits
) -> MemoryServer:
    return MemoryServer(
        config, stateless=stateless, peer=peer, max_handshake_buffer=limits.max_handshake_buffer
    )


def _read_proxy_header(
    sock: socket.socket, balancer: tuple[str, int], limits: Limits, deadline: float
) -> tuple[Arrival, bytes]:
    """A balancer's PROXY header, by ``deadline`` (time.monotonic): who the connection is from,
    and the bytes after the header.  HandshakeError says why there is none (OSError from the
    socket passes)."""
    reading = ProxyHeaderReader(balancer)
    while True:
        data = _recv_by(sock, deadline, limits.read_size)
        if data is None:
            reading.timed_out(limits.handshake_timeout)
            break
        if reading.receive(data):
            break
    if reading.error is not None:
        raise HandshakeError(reading.error)
    return reading.arrival, reading.rest


def _handshake(
    sock: socket.socket,
    session: MemoryServer,
    limits: Limits,
    first: bytes = b"",
    deadline: float | None = None,
) -> list[bytes]:
    """Until the handshake is complete or the client is gone (HandshakeError after
    ``handshake_timeout``, or at ``deadline``); the application data that came with the client's
    Finished.  ``first``: bytes read already (after a PROXY header)."""
    if deadline is None:
        deadline = time.monotonic() + limits.handshake_timeout
    received: list[bytes] = []
    if first:
        sock.sendall(handshake_step(session, first, received))
    while session.handshake is None and not session.closed:
        data = _recv_by(sock, deadline, limits.read_size)
        if data is None:
            raise HandshakeError(f"handshake_timeout ({limits.handshake_timeout:g}s)")
        sock.sendall(handshake_step(session, data, received))
    return received


def _recv_by(sock: socket.socket, deadline: float, size: int) -> bytes | None:
    """One read, by ``deadline`` (time.monotonic); None if the deadline passed first."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None
    sock.settimeout(remaining)
    try:
        return sock.recv(size)
    except TimeoutError:
        return None


class ThreadedServer:
    """A listening socket and a thread per connection; ``shutdown()`` from any thread."""

    def __init__(
        self,
        config: ServerConfig,
        handler: Callable[[BlockingTLSStream], None],
        host: str,
        port: int,
        *,
        limits: Limits,
        validation: Validation | str,
        on_report: Callable[[ConnectionReport], None] | None,
        reuse_port: bool = False,
        backlog: int | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.limits = limits
        backlog = default_backlog() if backlog is None else backlog
        self._admission = Admission(
            limits, connection_budget(limits, backlog), Validation(validation)
        )
        self.report = Reporter(on_report, proxy_protocol=bool(limits.proxy_protocol_from))
        self._stopping = threading.Event()
        self._accept_failed = RateLimitedWarning("accept() failed, retrying")
        self.socket = socket.create_server((host, port), reuse_port=reuse_port, backlog=backlog)
        self.socket.settimeout(0.2)  # so serve_forever notices shutdown()
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]

    def serve_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    sock, _ = self.socket.accept()
                except TimeoutError:
                    continue
                except OSError as error:  # out of descriptors (EMFILE) or memory: wait, go on
                    self._accept_failed(error)
                    time.sleep(0.1)
                    continue
                peer: tuple[str, int] = sock.getpeername()[:2]
                # A balancer's connection is counted by source once its header names the client.
                admission = self._admission
                source = None if admission.from_balancer(peer) else admission.source(peer)
                full = self._admission.admit(source)
                if full is not None:
                    sock.close()
                    self.report(ConnectionReport.refused(peer, full))
                    continue
                stateless = self._admission.stateless()
                threading.Thread(
                    target=self._serve_one, args=(sock, peer, source, stateless), daemon=True
                ).start()
        finally:
            self.socket.close()

    def shutdown(self) -> None:
        self._stopping.set()

    @property
    def stats(self) -> ServerStats:
        return self.report.stats

    def _serve_one(
        self, sock: socket.socket, peer: tuple[str, int], source: str | None, stateless: bool
    ) -> None:
        """``source`` None: from a balancer, whose PROXY header comes first."""
        started = time.monotonic()
        deadline = started + self.limits.handshake_timeout
        arrival, first = Arrival(peer), b""
        if source is None:
            proxied = self._proxy_header(sock, peer, started, deadline)
            if proxied is None:  # closed, and reported
                sock.close()
                self._admission.closed()
                return
            arrival, source, first = proxied
        handshake_time: float | None = None
        session = _session(self.config, arrival.peer, stateless, self.limits)
        error: str | None = None
        try:
            try:
                received = _handshake(sock, session, self.limits, first, deadline)
            finally:
                self._admission.handshake_over(source)
                handshake_time = time.monotonic() - started
            if session.handshake is not None:
                stream = BlockingTLSStream(sock, session, received, self.limits, arrival)
                try:
                    self.handler(stream)
                except ConnectionError:  # the client went away or stopped reading: not a bug
                    raise
                except Exception as exc:  # the application's bug: log it, close this one only
                    logger.exception("handler failed for %s:%s", *arrival.peer)
                    error = f"handler: {exc!r}"
        except (HandshakeError, WriteTimeout) as exc:
            error = str(exc)
        except OSError as exc:
            error = f"socket: {exc}"
        finally:
            sock.close()
            self._admission.closed()
            report = ConnectionReport.of(
                session, arrival.peer, started, handshake_time, error, via=arrival.via
            )
            self.report(report)

    def _proxy_header(
        self, sock: socket.socket, balancer: tuple[str, int], started: float, deadline: float
    ) -> tuple[Arrival, str, bytes] | None:
        """A balancer's PROXY header and the client it names counted by source, as the asyncio
        adapter's ``_proxy_header``; None once reported (the caller closes the socket)."""
        try:
            arrival, first = _read_proxy_header(sock, balancer, self.limits, deadline)
        except HandshakeError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"socket: {exc}"
        else:
            source = self._admission.source(arrival.peer)
            full = self._admission.admit_source(source)
            if full is None:
                return arrival, source, first
            self._admission.handshake_over(None)
            self.report(ConnectionReport.refused(arrival.peer, full, arrival.via))
            return None
        self._admission.handshake_over(None)
        self.report(ConnectionReport.before_tls(balancer, started, error))
        return None


def serve(
    config: ServerConfig,
    handler: Callable[[BlockingTLSStream], None],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: Limits | None = None,
    validation: Validation | str = Validation.ADAPTIVE,
    on_report: Callable[[ConnectionReport], None] | None = None,
    reuse_port: bool = False,
    backlog: int | None = None,
) -> ThreadedServer:
    """A bound server; call ``serve_forever()`` (e.g. in a thread) and later ``shutdown()``.

    ``validation``: ``"adaptive"`` (the stateless HRR only while more than
    ``limits.adaptive_handshakes`` connections are handshaking), ``"hrr"`` (always) or
    ``"none"`` (ordinary handshakes)."""
    return ThreadedServer(
        config,
        handler,
        host,
        port,
        limits=limits or Limits(),
        validation=validation,
        on_report=on_report,
        reuse_port=reuse_port,
        backlog=backlog,
    )
