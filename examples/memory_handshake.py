"""A complete stateless TLS 1.3 handshake in memory, against OpenSSL (Python's ssl) as the client.

Run from the top of a clone once ``.venv`` holds the package (``./serve`` and ``./run-tests``
make it; or ``python3 -m venv .venv && .venv/bin/pip install -e '.[quic]'``): the package is
installed there, not next to the script, so a bare ``python`` does not find it.

    .venv/bin/python examples/memory_handshake.py

The server answers ClientHello1 with a HelloRetryRequest and forgets the client; ClientHello2 is
then given to a *separate* server config that shares only the cookie key, as a second process or
machine would be.  No sockets: the bytes move through memory buffers.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import time

from stateless13 import (
    Accepted,
    ApplicationData,
    CookieKeyRing,
    Credential,
    HandshakeComplete,
    HelloRetry,
    ServerConfig,
    stateless_accept,
)


def main() -> None:
    # Two server configs sharing nothing but the cookie key bytes.
    credential = Credential.self_signed("localhost")
    key = os.urandom(32)
    front = ServerConfig(credentials=(credential,), cookie_keys=CookieKeyRing.from_bytes(key))
    back = ServerConfig(credentials=(credential,), cookie_keys=CookieKeyRing.from_bytes(key))

    # The client: OpenSSL over memory BIOs, verifying our certificate and host name.
    context = ssl.create_default_context(cadata=credential.certificate_pem().decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(to_client, from_client, server_hostname="localhost")

    def client_step(data: bytes = b"") -> bytes:
        to_client.write(data)
        with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server's reply
            client.do_handshake()
        return from_client.read()

    peer = ("192.0.2.10", 50000)
    ch1 = client_step()
    retry = stateless_accept(front, ch1, peer=peer, now=time.time())
    assert isinstance(retry, HelloRetry)
    print(
        f"ClientHello1 {len(ch1)} B -> HelloRetryRequest {len(retry.data_to_send)} B; "
        "server keeps nothing"
    )

    ch2 = client_step(retry.data_to_send)
    accepted = stateless_accept(back, ch2, peer=peer, now=time.time())
    assert isinstance(accepted, Accepted), accepted
    print(
        f"ClientHello2 {len(ch2)} B -> cookie verified by another config; "
        f"first flight {len(accepted.data_to_send)} B"
    )

    connection = accepted.connection
    connection.receive_data(client_step(accepted.data_to_send))
    for event in connection.events():
        if isinstance(event, HandshakeComplete):
            # No signature when the client resumed a session (a ticket): its PSK authenticates.
            signature = "resumed" if event.signature_scheme is None else event.signature_scheme.name
            print(
                f"handshake complete: {event.cipher_suite.name}, {event.key_exchange}, "
                f"{signature}, SNI {event.server_name}"
            )

    client.write(b"hello, server")
    connection.receive_data(from_client.read())
    data = b"".join(e.data for e in connection.events() if isinstance(e, ApplicationData))
    print(f"server received {data!r}")
    connection.send(b"hello, client")
    to_client.write(connection.data_to_send())
    print(f"client received {client.read()!r} over {client.version()}")


if __name__ == "__main__":
    main()
