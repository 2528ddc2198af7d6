"""Shared test helpers: a real client (Python's ``ssl``, i.e. OpenSSL) driven over memory BIOs."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from stateless13 import Accepted, HelloRetry, ServerConfig, stateless_accept

PEER = ("203.0.113.7", 4433)


class PythonSSLClient:
    """OpenSSL's TLS 1.3 client, speaking through memory buffers (no sockets)."""

    def __init__(
        self,
        *,
        server_hostname: str | None = "localhost",
        middlebox_compat: bool = True,
        alpn: list[str] | None = None,
        cafile_pem: bytes | None = None,
        keylog_filename: str | None = None,
        context: ssl.SSLContext | None = None,
        session: ssl.SSLSession | None = None,
    ) -> None:
        """``context``: one shared with an earlier client, whose ``session`` this one resumes
        (OpenSSL resumes a session only in the context that made it); the other options then
        come from that context."""
        self.context = context or self._context(middlebox_compat, alpn, cafile_pem, keylog_filename)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = self.context.wrap_bio(
            self.incoming, self.outgoing, server_hostname=server_hostname, session=session
        )
        self.handshake_done = False

    @staticmethod
    def _context(
        middlebox_compat: bool,
        alpn: list[str] | None,
        cafile_pem: bytes | None,
        keylog_filename: str | None,
    ) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if cafile_pem is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cadata=cafile_pem.decode("ascii"))
        if not middlebox_compat:
            ctx.options &= ~ssl.OP_ENABLE_MIDDLEBOX_COMPAT
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if keylog_filename:
            ctx.keylog_filename = keylog_filename
        return ctx

    def take_tickets(self, data: bytes) -> ssl.SSLSession:
        """Read the server's post-handshake bytes (its NewSessionTickets): the session to resume."""
        self.incoming.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.read(1)
        session = self.tls.session
        assert session is not None
        return session

    def step(self, data: bytes = b"") -> bytes:
        """Feed server bytes, advance the handshake, return what the client wants to send."""
        if data:
            self.incoming.write(data)
        if not self.handshake_done:
            try:
                self.tls.do_handshake()
                self.handshake_done = True
            except ssl.SSLWantReadError:
                pass
        return self.outgoing.read()

    def send(self, data: bytes) -> bytes:
        self.tls.write(data)
        return self.outgoing.read()

    def receive(self, data: bytes) -> bytes:
        self.incoming.write(data)
        chunks = []
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                break
            if not chunk:  # close_notify: OpenSSL returns b"" from then on
                break
            chunks.append(chunk)
        return b"".join(chunks)


def stateless_handshake(
    config: ServerConfig,
    client: PythonSSLClient,
    *,
    resume_config: ServerConfig | None = None,
    peer: tuple[str, int] | None = PEER,
) -> Accepted:
    """CH1 → HelloRetry → CH2 → Accepted → client Finished, asserting each step."""
    now = time.time()
    first = stateless_accept(config, client.step(), peer=peer, now=now)
    assert isinstance(first, HelloRetry), first
    second = stateless_accept(
        resume_config or config, client.step(first.data_to_send), peer=peer, now=now
    )
    assert isinstance(second, Accepted), second
    finished = client.step(second.data_to_send)
    assert client.handshake_done
    second.connection.receive_data(finished)
    return second


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"the server closed after {data!r}"
        data += chunk
    return data


def read_record(sock: socket.socket) -> bytes:
    """Exactly one TLS record."""
    header = read_exactly(sock, 5)
    return header + read_exactly(sock, int.from_bytes(header[3:5], "big"))


def read_until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes (a reset counts as closed)."""
    data = b""
    while select.select([sock], [], [], timeout)[0]:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close within {timeout}s; got {data!r}")


def handshake_bytes(records: bytes) -> bytes:
    """The handshake payloads of a plaintext record stream, concatenated (other records skipped)."""
    out = bytearray()
    offset = 0
    while offset < len(records):
        length = int.from_bytes(records[offset + 3 : offset + 5], "big")
        if records[offset] == 22:  # handshake
            out += records[offset + 5 : offset + 5 + length]
        offset += 5 + length
    return bytes(out)
