"""NEW_TOKEN with real QUIC clients: a returning client skips address validation (RFC 9000 §8.1.3).

quic-go (``quicgoclient -connections 2``: two connections, one after the other, with one token
store, ``quic.NewLRUTokenStore``) goes through the default stateless HRR on its first connection
and, carrying the NEW_TOKEN token it got there, through none on its second, on the same server
or on another one holding the same cookie keys; aioquic's client (``token_handler``,
``QuicConfiguration.token``) does the same after a Retry; gtlsclient (``--token-file``) takes
and stores our NEW_TOKEN frame, but its build (ngtcp2 0.12.1) never reads the file back.  The
proof is the server's reports (``validation=cookie`` then ``validation=token``), its counters
(HRRs, Retries, tokens issued and accepted) and the datagrams both ways, counted on the wire by
a relay per connection: the returning client completes its handshake one round trip sooner.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aioquic.asyncio.client import connect
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from stateless13 import CookieKeyRing
from stateless13.transports.common import ConnectionReport
from stateless13.transports.quic_front import Validation
from stateless13.transports.quic_server import PAGE_TEXT
from stateless13.transports.quic_tokens import NEW_TOKEN_KIND, SERVER_CID_LENGTH, token_kind
from tests.peers.test_quic_peers import (
    QuicServerFactory,
    QuicTestServer,
    _H3Client,
    run_gtlsclient,
    run_quicgo,
)
from tests.peers.test_quic_peers import quic_server as quic_server  # the fixtures
from tests.peers.test_quic_peers import quicgoclient as quicgoclient

# ---------------------------------------------------------------------------------------------
# A UDP relay that tells connections apart (each of the client's sockets is one connection).


@dataclass
class Counts:
    client_datagrams: int = 0
    client_bytes: int = 0
    server_datagrams: int = 0
    server_bytes: int = 0

    def add(self, to_server: bool, size: int) -> None:
        if to_server:
            self.client_datagrams += 1
            self.client_bytes += size
        else:
            self.server_datagrams += 1
            self.server_bytes += size

    def __str__(self) -> str:
        return (
            f"client->server {self.client_datagrams} datagrams/{self.client_bytes} B, "
            f"server->client {self.server_datagrams} datagrams/{self.server_bytes} B"
        )


@dataclass
class Wire:
    """One connection as the relay saw it."""

    #: The client's flights (runs of datagrams between the server's) before its first datagram
    #: with a Handshake packet: the round trips until its handshake completed.
    round_trips: int = 0
    to_handshake: Counts = field(default_factory=Counts)
    total: Counts = field(default_factory=Counts)


def packet_types(datagram: bytes) -> list[QuicPacketType]:
    """The packets coalesced in a datagram (a short-header packet ends it)."""
    types, offset = [], 0
    while offset < len(datagram):
        try:
            header = pull_quic_header(
                Buffer(data=datagram[offset:]), host_cid_length=SERVER_CID_LENGTH
            )
        except (ValueError, BufferReadError):
            break  # padding
        types.append(header.packet_type)
        if header.packet_type == QuicPacketType.ONE_RTT or not header.packet_length:
            break
        offset += header.packet_length
    return types


class ConnectionRelay:
    """client <-> 127.0.0.1:port <-> server, one upstream socket per client socket, so that each
    of the client's connections reaches the server from its own port and is logged apart.  The
    n-th connection goes to ``upstreams[n]`` (the last one for the rest): a fleet in miniature."""

    def __init__(self, *upstreams: tuple[str, int]) -> None:
        self.upstreams = upstreams
        self.log: list[tuple[int, bool, bytes]] = []  # (connection, to_server, datagram)
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self._clients: dict[Any, tuple[int, socket.socket]] = {}
        self._by_socket: dict[socket.socket, Any] = {}
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listen, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data, addr = sock.recvfrom(65536)
                if sock is self.listen:
                    if addr not in self._clients:
                        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        upstream.bind(("127.0.0.1", 0))
                        self._clients[addr] = (len(self._clients), upstream)
                        self._by_socket[upstream] = addr
                        self._selector.register(upstream, selectors.EVENT_READ)
                    number, upstream = self._clients[addr]
                    self.log.append((number, True, data))
                    upstream.sendto(data, self.upstreams[min(number, len(self.upstreams) - 1)])
                else:
                    client = self._by_socket[sock]
                    self.log.append((self._clients[client][0], False, data))
                    self.listen.sendto(data, client)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._selector.close()
        for _, upstream in self._clients.values():
            upstream.close()
        self.listen.close()

    def __enter__(self) -> ConnectionRelay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connections(self) -> int:
        return len(self._clients)

    def wire(self, connection: int) -> Wire:
        wire, last_to_server, completed = Wire(), False, False
        for number, to_server, data in self.log:
            if number != connection:
                continue
            if to_server and not completed:
                completed = QuicPacketType.HANDSHAKE in packet_types(data)
                if not completed and not last_to_server:
                    wire.round_trips += 1
            if not completed:
                wire.to_handshake.add(to_server, len(data))
            wire.total.add(to_server, len(data))
            last_to_server = to_server
        return wire


def report_line(report: ConnectionReport) -> str:
    return (
        f"validation={report.validation} hrr={'yes' if report.hello_retry else 'no'} "
        f"in={report.datagrams_in} out={report.datagrams_out}"
    )


def assert_one_round_trip_fewer(first: Wire, second: Wire) -> None:
    """One client flight fewer until the handshake completed; and, when nothing was sent twice
    (one datagram per flight each way: a loaded machine may make a client repeat its Initial),
    exactly one datagram fewer each way.  The memory tests count without any timer."""
    assert second.round_trips == first.round_trips - 1 == 1, (first, second)

    def clean(wire: Wire) -> bool:
        counts = wire.to_handshake
        return counts.client_datagrams == counts.server_datagrams == wire.round_trips

    if clean(first) and clean(second):
        assert second.to_handshake.client_datagrams == first.to_handshake.client_datagrams - 1
        assert second.to_handshake.server_datagrams == first.to_handshake.server_datagrams - 1


def by_validation(reports: list[ConnectionReport]) -> dict[str | None, ConnectionReport]:
    """The reports by their validation (a connection is reported when it ends, and the first
    one's end may come after the second's: aioquic drains a closed connection for 3 PTOs)."""
    found = {report.validation: report for report in reports}
    assert len(found) == len(reports), reports
    return found


def wait_for_stats(server: QuicTestServer, **expected: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = server.stats
        if all(getattr(stats, name) == value for name, value in expected.items()):
            return
        time.sleep(0.02)
    raise AssertionError(f"expected {expected}, the front counted {server.stats}")


# ---------------------------------------------------------------------------------------------
# quic-go: through the stateless HRR, then a token.


def test_quic_go_returns_with_its_token_and_skips_the_hrr(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    server = quic_server()  # Validation.HRR, as serve_quic's HRR mode
    with ConnectionRelay((server.host, server.port)) as relay:
        run = run_quicgo(quicgoclient, relay.port, "-connections", "2")
        assert run.ok, run.output
        reports = by_validation(server.handshakes(2))
        assert relay.connections == 2
        wires = relay.wire(0), relay.wire(1)
    first, second = reports["cookie"], reports["token"]
    # quic-go stored the token of the first connection and sent it in the second's Initials.
    assert run.output.count("TOKEN_RECEIVED") >= 2 and run.output.count("TOKEN_SENT") == 1
    assert run.output.index("TOKEN_SENT") > run.output.index("CONNECTION 2"), run.output
    assert first.hello_retry and first.cookie_verified, first
    assert not second.hello_retry, second
    assert not second.cookie_verified and second.error is None, second
    wait_for_stats(server, hrr_sent=1, retry_sent=0, tokens_issued=2, tokens_accepted=1)
    assert server.stats.tokens_ignored == 0
    assert_one_round_trip_fewer(*wires)
    # The server's own count of each connection's datagrams: the first one's HRR exchange went
    # through the front (one datagram each way), before the connection existed.
    assert wires[1].total.client_datagrams == second.datagrams_in
    assert wires[1].total.server_datagrams == second.datagrams_out
    print(
        f"\nquic-go, first connection (stateless HRR): {wires[0].round_trips} round trips until"
        f" the handshake; {wires[0].to_handshake}; in all {wires[0].total}; server report"
        f" {report_line(first)} + the HRR exchange in the front"
        f"\nquic-go, returning with its NEW_TOKEN: {wires[1].round_trips} round trip until the"
        f" handshake; {wires[1].to_handshake}; in all {wires[1].total}; server report"
        f" {report_line(second)}"
    )


def test_quic_go_token_from_one_node_skips_validation_on_another(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    """Two servers sharing the cookie keys: the first connection lands on node A (stateless
    HRR), the second, with A's token, on node B, which validates nothing more."""
    keys = CookieKeyRing.generate()
    node_a = quic_server(cookie_keys=keys)
    node_b = quic_server(Validation.RETRY, cookie_keys=keys)  # B would otherwise send a Retry
    with ConnectionRelay((node_a.host, node_a.port), (node_b.host, node_b.port)) as relay:
        run = run_quicgo(quicgoclient, relay.port, "-connections", "2")
        assert run.ok, run.output
        (on_a,), (on_b,) = node_a.handshakes(1), node_b.handshakes(1)
        wires = relay.wire(0), relay.wire(1)
    assert on_a.validation == "cookie" and on_b.validation == "token", (on_a, on_b)
    wait_for_stats(node_a, hrr_sent=1, tokens_issued=1, tokens_accepted=0)
    wait_for_stats(node_b, hrr_sent=0, retry_sent=0, tokens_issued=1, tokens_accepted=1)
    assert_one_round_trip_fewer(*wires)


def test_quic_go_with_a_token_of_another_key_ring_goes_through_the_hrr(
    quic_server: QuicServerFactory, quicgoclient: Path
) -> None:
    """Node B does not hold A's key: the token is ignored (not refused, RFC 9000 §8.1.3), and
    the client goes through B's stateless HRR as a new one would."""
    node_a, node_b = quic_server(), quic_server()  # a random cookie key each
    with ConnectionRelay((node_a.host, node_a.port), (node_b.host, node_b.port)) as relay:
        run = run_quicgo(quicgoclient, relay.port, "-connections", "2")
        assert run.ok, run.output
        (on_b,) = node_b.handshakes(1)
    assert "TOKEN_SENT" in run.output, run.output
    assert on_b.validation == "cookie" and on_b.hello_retry, on_b
    wait_for_stats(node_b, hrr_sent=1, tokens_accepted=0, closes_sent=0)
    # Ignored on ClientHello1, and on ClientHello2 too when it went to the same CID (quic-go's
    # first DCID is 8 to 20 bytes; our HRR keeps one of 20): counted per datagram.
    assert node_b.stats.tokens_ignored in (1, 2), node_b.stats


# ---------------------------------------------------------------------------------------------
# aioquic's client: a Retry, then a token.


def fetch_with_aioquic(port: int, token: bytes = b"") -> tuple[bool, list[bytes]]:
    """GET / with aioquic's client offering ``token``; (a 200 came, the NEW_TOKENs received)."""
    tokens: list[bytes] = []

    async def fetch() -> bool:
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            verify_mode=ssl.CERT_NONE,
            server_name="localhost",
            token=token,
        )
        async with connect(
            "127.0.0.1",
            port,
            configuration=configuration,
            create_protocol=_H3Client,
            token_handler=tokens.append,
        ) as client:
            assert isinstance(client, _H3Client)
            stream_id = client._quic.get_next_available_stream_id()
            client.h3.send_headers(
                stream_id,
                [
                    (b":method", b"GET"),
                    (b":scheme", b"https"),
                    (b":authority", b"localhost"),
                    (b":path", b"/"),
                ],
                end_stream=True,
            )
            client.transmit()
            await asyncio.wait_for(client.done, 10)
            for _ in range(50):  # the NEW_TOKEN frame came with HANDSHAKE_DONE, before the page
                if tokens:
                    break
                await asyncio.sleep(0.02)
            return client.status == b"200" and PAGE_TEXT.encode() in client.body

    return asyncio.run(asyncio.wait_for(fetch(), 20)), tokens


def test_aioquic_returns_with_its_token_and_skips_the_retry(
    quic_server: QuicServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = quic_server(Validation.RETRY)  # aioquic's client cannot take our HRR
    with ConnectionRelay((server.host, server.port)) as relay:
        ok, tokens = fetch_with_aioquic(relay.port)
        assert ok and len(tokens) == 1 and token_kind(tokens[0]) == NEW_TOKEN_KIND, tokens
        ok, again = fetch_with_aioquic(relay.port, token=tokens[0])
        assert ok and again and again[0] != tokens[0]
        reports = by_validation(server.handshakes(2))
        wires = relay.wire(0), relay.wire(1)
    assert set(reports) == {"retry", "token"}, reports
    second = reports["token"]
    wait_for_stats(server, retry_sent=1, hrr_sent=0, tokens_issued=2, tokens_accepted=1)
    assert_one_round_trip_fewer(*wires)
    # The stat line counts them (the reports' log lines say validation=token).
    with caplog.at_level(logging.INFO, logger="stateless13.stats"):
        server.server.log_stats()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "stateless13.stats"]
    assert "tokens_issued=2 tokens_accepted=1 tokens_ignored=0" in line, line
    assert "validation=token" in second.log_line()
    print(
        f"\naioquic, first connection (Retry): {wires[0].round_trips} round trips until the"
        f" handshake; {wires[0].to_handshake}; in all {wires[0].total}"
        f"\naioquic, returning with its NEW_TOKEN: {wires[1].round_trips} round trip until the"
        f" handshake; {wires[1].to_handshake}; in all {wires[1].total}"
    )


# ---------------------------------------------------------------------------------------------
# gtlsclient: takes the frame, stores the token, never sends it back.

GTLS_NEW_TOKEN = re.compile(r"frm rx \d+ 1RTT NEW_TOKEN\(0x07\) token=0x([0-9a-f]+) len=(\d+)")


def read_token_file(path: Path) -> bytes:
    lines = path.read_text().split()
    assert lines[:3] == ["-----BEGIN", "QUIC", "TOKEN-----"], lines
    body = "".join(lines[3 : lines.index("-----END")])
    return base64.b64decode(body)


def test_gtlsclient_stores_our_new_token(quic_server: QuicServerFactory, tmp_path: Path) -> None:
    """ngtcp2's client parses our NEW_TOKEN frame and writes the token to ``--token-file``; the
    token opens on the server as a NEW_TOKEN token for 127.0.0.1.  Its next run reads no byte of
    the file ("Could not read token in FILE": this build opens it and never reads), so it comes
    back without a token, through the stateless HRR again; should a later build read it, the
    report must say ``validation=token``."""
    server = quic_server()
    token_file = tmp_path / "token.pem"
    first = run_gtlsclient(server.port, f"--token-file={token_file}")
    assert first.ok and first.hrr_seen, first.output
    match = GTLS_NEW_TOKEN.search(first.output)
    assert match is not None, first.output
    stored = read_token_file(token_file)
    assert stored.hex() == match.group(1) and len(stored) == int(match.group(2)) == 40
    tokens = server.server.front.address_tokens
    assert tokens is not None and tokens.open(stored, ("127.0.0.1", 1), time.time())
    second = run_gtlsclient(server.port, f"--token-file={token_file}")
    assert second.ok, second.output
    validations = sorted(str(r.validation) for r in server.handshakes(2))
    if "Could not read token in" in second.output:
        assert second.hrr_seen and validations == ["cookie", "cookie"], validations
        wait_for_stats(server, hrr_sent=2, tokens_ignored=0, tokens_accepted=0)
    else:
        assert not second.hrr_seen and validations == ["cookie", "token"], validations
