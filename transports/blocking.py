"""Blocking sockets: wrap one connected socket, or run a thread-per-connection server.

    stream = accept_tls(sock, config)          # the stateless front, then the handshake
    stream.sendall(b"hi"); data = stream.recv()

    server = serve(config, handler, "127.0.0.1", 8443)   # handler(stream) runs in a thread
    server.serve_forever()

Like the asyncio adapter, the per-connection layer is
:class:`~stateless13.transports.memory.MemoryServer`: between the HelloRetryRequest and
ClientHello2 a client costs its socket, unread bytes and a bit.
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
    ConnectionReport,
    HandshakeError,
    Limits,
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


class BlockingTLSStream(StreamState):
    """A TLS connection over a blocking socket, after its handshake (``handshake``, ``peer``,
    ``alpn_protocol``, ``server_name`` say what was agreed)."""

    def __init__(
        self, sock: socket.socket, session: MemoryServer, received: list[bytes], limits: Limits
    ) -> None:
        super().__init__(session, received, limits, sock.getpeername()[:2])
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
    (our alert, if any, has been sent)."""
    limits = limits or Limits()
    session = _session(config, sock.getpeername()[:2], stateless, limits)
    received = _handshake(sock, session, limits)
    if session.handshake is None:
        raise HandshakeError(session.error or "the handshake did not complete")
    return BlockingTLSStream(sock, session, received, limits)


def _session(
    config: ServerConfig, peer: tuple[str, int], stateless: bool, limits: Limits
) -> MemoryServer:
    return MemoryServer(
        config, stateless=stateless, peer=peer, max_handshake_buffer=limits.max_handshake_buffer
    )


def _handshake(sock: socket.socket, session: MemoryServer, limits: Limits) -> list[bytes]:
    """Until the handshake is complete or the client is gone (HandshakeError after
    ``handshake_timeout``); the application data that came with the client's Finished."""
    deadline = time.monotonic() + limits.handshake_timeout
    received: list[bytes] = []
    while session.handshake is None and not session.closed:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            data = sock.recv(limits.read_size)
        except TimeoutError:
            raise HandshakeError(f"handshake_timeout ({limits.handshake_timeout:g}s)") from None
        sock.sendall(handshake_step(session, data, received))
    return received


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
        self.report = Reporter(on_report)
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
                source = self._admission.source(peer)
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
        self, sock: socket.socket, peer: tuple[str, int], source: str, stateless: bool
    ) -> None:
        started = time.monotonic()
        handshake_time: float | None = None
        session = _session(self.config, peer, stateless, self.limits)
        error: str | None = None
        try:
            try:
                received = _handshake(sock, session, self.limits)
            finally:
                self._admission.handshake_over(source)
                handshake_time = time.monotonic() - started
            if session.handshake is not None:
                try:
                    self.handler(BlockingTLSStream(sock, session, received, self.limits))
                except ConnectionError:  # the client went away or stopped reading: not a bug
                    raise
                except Exception as exc:  # the application's bug: log it, close this one only
                    logger.exception("handler failed for %s:%s", *peer)
                    error = f"handler: {exc!r}"
        except (HandshakeError, WriteTimeout) as exc:
            error = str(exc)
        except OSError as exc:
            error = f"socket: {exc}"
        finally:
            sock.close()
            self._admission.closed()
            self.report(ConnectionReport.of(session, peer, started, handshake_time, error))


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
