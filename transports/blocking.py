"""Blocking sockets: wrap one connected socket, or run a thread-per-connection server.

    stream = accept_tls(sock, config)          # the stateless front, then the handshake
    stream.sendall(b"hi"); data = stream.recv()

    server = serve(config, handler, "127.0.0.1", 8443)   # handler(stream) runs in a thread
    server.serve_forever()

Like the asyncio adapter, the per-connection driver is :class:`transports.memory.MemoryServer`:
between the HelloRetryRequest and ClientHello2 a client costs its socket, unread bytes and a bit.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from stateless13 import (
    ServerConfig,
)

from .common import (
    ConnectionReport,
    HandshakeDriver,
    HandshakeError,
    Limits,
    StreamState,
)
from .memory import MemoryServer

logger = logging.getLogger("stateless13.server")


class BlockingTLSStream(StreamState):
    """A TLS connection over a blocking socket, after its handshake (``info``, ``peer``,
    ``alpn_protocol``, ``server_name`` say what was agreed)."""

    def __init__(self, sock: socket.socket, driver: HandshakeDriver, limits: Limits) -> None:
        assert driver.server.connection is not None
        super().__init__(driver.server.connection, driver, limits, sock.getpeername()[:2])
        self.socket = sock

    def recv(self) -> bytes:
        """The next application data; ``b""`` once the client closed, failed or went idle."""
        while not self._received and not self._eof:
            self.socket.settimeout(self._limits.idle_timeout)
            try:
                data = self.socket.recv(self._limits.read_size)
            except TimeoutError:
                self._eof = True
                break
            self._absorb(data)
            self._flush()
        return self._next_chunk()

    def sendall(self, data: bytes) -> None:
        self._connection.send(data)
        self._flush()

    def close(self) -> None:
        """Send close_notify and close the socket."""
        try:
            self._connection.close()
            self._flush()
        except OSError:
            pass
        finally:
            self.socket.close()

    def _flush(self) -> None:
        data = self._connection.data_to_send()
        if data:
            self.socket.sendall(data)


def accept_tls(
    sock: socket.socket,
    config: ServerConfig,
    *,
    stateless: bool = True,
    limits: Limits | None = None,
    driver: HandshakeDriver | None = None,
) -> BlockingTLSStream:
    """Run the handshake on a connected socket; raise HandshakeError if it does not complete."""
    limits = limits or Limits()
    if driver is None:
        peer: tuple[str, int] = sock.getpeername()[:2]
        driver = HandshakeDriver(MemoryServer(config, stateless=stateless, peer=peer), limits)
    deadline = time.monotonic() + limits.handshake_timeout
    timeout = HandshakeError(f"handshake_timeout ({limits.handshake_timeout:g}s)")
    while not driver.done:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise timeout
        sock.settimeout(remaining)
        try:
            data = sock.recv(limits.read_size)
        except TimeoutError:
            raise timeout from None
        try:
            sock.sendall(driver.step(data))
        except HandshakeError as exc:
            sock.sendall(exc.data_to_send)
            raise
    return BlockingTLSStream(sock, driver, limits)


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
        stateless: bool,
        on_report: Callable[[ConnectionReport], None] | None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self.handler = handler
        self.limits = limits
        self.stateless = stateless
        self.on_report = on_report
        self._lock = threading.Lock()
        self._handshaking = 0
        self._stopping = threading.Event()
        self.socket = socket.create_server((host, port), reuse_port=reuse_port)
        self.socket.settimeout(0.2)  # so serve_forever notices shutdown()
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]

    def serve_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    sock, _ = self.socket.accept()
                except TimeoutError:
                    continue
                with self._lock:
                    full = self._handshaking >= self.limits.max_concurrent_handshakes
                    if not full:
                        self._handshaking += 1
                if full:
                    peer = sock.getpeername()[:2]
                    sock.close()
                    self._report(ConnectionReport.refused(peer))
                    continue
                threading.Thread(target=self._serve_one, args=(sock,), daemon=True).start()
        finally:
            self.socket.close()

    def shutdown(self) -> None:
        self._stopping.set()

    def _serve_one(self, sock: socket.socket) -> None:
        started = time.monotonic()
        peer: tuple[str, int] = sock.getpeername()[:2]
        driver = HandshakeDriver(
            MemoryServer(self.config, stateless=self.stateless, peer=peer), self.limits
        )
        error: str | None = None
        try:
            try:
                stream = accept_tls(sock, self.config, limits=self.limits, driver=driver)
            finally:
                with self._lock:
                    self._handshaking -= 1
            try:
                self.handler(stream)
            except Exception as exc:  # the application's bug: log it, close this connection only
                logger.exception("handler failed for %s:%s", *peer)
                error = f"handler: {exc!r}"
        except HandshakeError as exc:
            error = str(exc)
        except OSError as exc:
            error = f"socket: {exc}"
        finally:
            sock.close()
            self._report(driver.report(peer, time.monotonic() - started, error))

    def _report(self, report: ConnectionReport) -> None:
        logger.info("%s", report.log_line())
        if self.on_report is not None:
            self.on_report(report)


def serve(
    config: ServerConfig,
    handler: Callable[[BlockingTLSStream], None],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    limits: Limits | None = None,
    stateless: bool = True,
    on_report: Callable[[ConnectionReport], None] | None = None,
    reuse_port: bool = False,
) -> ThreadedServer:
    """A bound server; call ``serve_forever()`` (e.g. in a thread) and later ``shutdown()``."""
    return ThreadedServer(
        config,
        handler,
        host,
        port,
        limits=limits or Limits(),
        stateless=stateless,
        on_report=on_report,
        reuse_port=reuse_port,
    )
