"""Shared test helpers: a real client (Python's ``ssl``, i.e. OpenSSL) driven over memory BIOs."""

from __future__ import annotations

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
    ) -> None:
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
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.handshake_done = False

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
