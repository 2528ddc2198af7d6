"""A second, independent client — tlslite-ng (pure Python) — through the stateless front.

tlslite-ng sends two key shares (secp256r1 and x25519), so it covers what OpenSSL does not: a
cookie-only HRR after which ClientHello2 repeats several shares, and a group switch on request.
The client runs in a thread over a socketpair; the server side is ``stateless13.transports.memory``.
"""

from __future__ import annotations

import socket
import threading

import pytest
from tlslite.api import HandshakeSettings, Session, TLSConnection

from stateless13 import NamedGroup, ServerConfig
from stateless13.config import DEFAULT_GROUPS
from stateless13.transports.memory import MemoryServer


def run_tlslite_client(
    sock: socket.socket,
    result: dict[str, object],
    key_shares: list[str],
    session: Session | None = None,
) -> None:
    """One connection: ping, read the pong (and the tickets before it); ``result`` gets the
    version, the reply, the session to resume and whether ``session`` was resumed."""
    try:
        connection = TLSConnection(sock)
        settings = HandshakeSettings()
        settings.minVersion = settings.maxVersion = (3, 4)
        settings.keyShares = key_shares
        connection.handshakeClientCert(settings=settings, serverName="localhost", session=session)
        result["version"] = connection.version
        result["resumed"] = connection.resumed
        connection.write(b"ping from tlslite")
        result["reply"] = connection.read()
        result["session"] = connection.session
        connection.close()
    except Exception as exc:  # reported to the test thread
        result["error"] = repr(exc)
    finally:
        sock.close()


def serve_one(server: MemoryServer, sock: socket.socket) -> bytes:
    received = b""
    sock.settimeout(20)
    while True:
        data = sock.recv(65536)
        events = server.receive(data)
        received += MemoryServer.application_data(events)
        if received and server.connection is not None:
            server.send(b"pong: " + received)
            received_reply = received
            received = b""
            sock.sendall(server.data_to_send())
            return received_reply
        sock.sendall(server.data_to_send())
        if not data or server.closed:
            return b""


@pytest.mark.parametrize(
    ("groups", "key_shares", "expected"),
    [
        # cookie-only HRR, two shares repeated
        ((NamedGroup.x25519,), ["secp256r1", "x25519"], NamedGroup.x25519),
        # HRR asks for a P-384 share
        ((NamedGroup.secp384r1,), ["secp256r1", "x25519"], NamedGroup.secp384r1),
        # the default groups: tlslite-ng supports X25519MLKEM768 (kyber-py is installed) but
        # shares P-256 and x25519 only: the HRR names our first tier, a promotion (README's table)
        (DEFAULT_GROUPS, ["secp256r1", "x25519"], NamedGroup.X25519MLKEM768),
    ],
    ids=["cookie-only-retry", "group-switch", "default-groups"],
)
def test_tlslite_client_through_the_stateless_front(
    groups: tuple[NamedGroup | tuple[NamedGroup, ...], ...],
    key_shares: list[str],
    expected: NamedGroup,
) -> None:
    server_sock, client_sock = socket.socketpair()
    result: dict[str, object] = {}
    thread = threading.Thread(target=run_tlslite_client, args=(client_sock, result, key_shares))
    thread.start()
    server = MemoryServer(ServerConfig.self_signed("localhost", groups=groups))
    try:
        received = serve_one(server, server_sock)
    finally:
        thread.join(30)
        server_sock.close()
    assert "error" not in result, result
    assert result["version"] == (3, 4) and received == b"ping from tlslite"
    assert result["reply"] == b"pong: ping from tlslite"
    assert server.handshake is not None
    assert server.handshake.cookie_verified and server.handshake.group == expected


def test_tlslite_resumes_with_our_ticket() -> None:
    """tlslite-ng takes our tickets with the first connection's reply and resumes with one on
    the second, through the stateless HRR (a P-384 share asked for both times); the server's
    own reports say which connection resumed."""
    config = ServerConfig.self_signed("localhost", groups=(NamedGroup.secp384r1,))
    results: list[dict[str, object]] = []
    servers: list[MemoryServer] = []
    session: Session | None = None
    for _ in range(2):
        server_sock, client_sock = socket.socketpair()
        result: dict[str, object] = {}
        thread = threading.Thread(
            target=run_tlslite_client, args=(client_sock, result, ["x25519"], session)
        )
        thread.start()
        server = MemoryServer(config)
        try:
            serve_one(server, server_sock)
        finally:
            thread.join(30)
            server_sock.close()
        assert "error" not in result, result
        assert result["reply"] == b"pong: ping from tlslite"
        session = result["session"]
        results.append(result)
        servers.append(server)
    assert [r["resumed"] for r in results] == [False, True]
    handshakes = [s.handshake for s in servers]
    assert all(h is not None and h.cookie_verified for h in handshakes), handshakes
    assert [h.resumed for h in handshakes if h is not None] == [False, True]
