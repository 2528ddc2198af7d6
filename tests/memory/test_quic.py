"""The QUIC adapter without sockets: the stateless front, the connection it builds, the TLS engine.

Client Initials come from aioquic's own client (it cannot go past an HRR, so ClientHello2 is made
here: ClientHello1 plus the cookie, sent in an Initial to the HRR's SCID, which is what a real
client does when the HRR asks for no new key share).  Real clients are in test_quic_peers.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import ssl
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    pull_ack_frame,
    pull_quic_header,
    pull_quic_transport_parameters,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.tls import SessionTicket

from stateless13 import CookieKeyRing, DecryptError, NamedGroup, ServerConfig
from stateless13.alerts import AlertDescription
from stateless13.cookie import CookieState, peer_binding
from stateless13.messages import (
    HELLO_RETRY_REQUEST_RANDOM,
    ExtensionType,
    cookie_body,
    pull_client_hello,
    pull_server_hello,
    push_client_hello,
)
from stateless13.transports.quic_front import (
    Accept,
    Drop,
    InitialFront,
    Pending,
    QuicOptions,
    Reply,
    ReplyKind,
    Validation,
)
from stateless13.transports.quic_server import quic_configuration
from stateless13.transports.quic_tls import QuicTLS, StatelessQuicConnection
from stateless13.transports.quic_tokens import (
    SERVER_CID_LENGTH,
    ConnectionIds,
    InvalidToken,
    QuicCookieState,
    RetryTokens,
)

CLIENT = ("198.51.100.7", 40000)
SERVER = ("192.0.2.1", 443)
CONFIG = ServerConfig.self_signed("localhost", alpn_protocols=(b"h3",))
NOW = 1_800_000_000.0


# ---------------------------------------------------------------------------------------------
# A client's side of the wire, made by hand where aioquic's client cannot go.


def aioquic_client(
    *,
    big: bool = False,
    alpn: str = "h3",
    session_ticket: SessionTicket | None = None,
    session_ticket_handler: Callable[[SessionTicket], None] | None = None,
) -> tuple[QuicConnection, list[bytes]]:
    """aioquic's client and its first flight; ``big`` adds 1200 bytes of transport parameters;
    ``session_ticket`` (one of ours, from ``session_ticket_handler``) is offered to resume."""
    configuration = QuicConfiguration(
        is_client=True,
        alpn_protocols=[alpn],
        verify_mode=ssl.CERT_NONE,
        server_name="localhost",
        quantum_readiness_test=big,
        session_ticket=session_ticket,
    )
    client = QuicConnection(
        configuration=configuration, session_ticket_handler=session_ticket_handler
    )
    client.connect(SERVER, now=NOW)
    return client, [data for data, _ in client.datagrams_to_send(now=NOW)]


@dataclass
class Opened:
    """One Initial packet, decrypted."""

    packet_type: QuicPacketType
    destination_cid: bytes
    source_cid: bytes
    token: bytes
    packet_number: int
    crypto: list[tuple[int, bytes]] = field(default_factory=list)
    largest_acked: int | None = None
    close: tuple[int, bytes] | None = None  # error code, reason

    def crypto_at(self, offset: int) -> bytes:
        return dict(self.crypto)[offset]


def open_initial(datagram: bytes, key_cid: bytes, *, sent_by_client: bool) -> Opened:
    """Decrypt the first packet of ``datagram`` (an Initial) with the keys of ``key_cid``."""
    buf = Buffer(data=datagram)
    header = pull_quic_header(buf, host_cid_length=SERVER_CID_LENGTH)
    assert header.packet_type == QuicPacketType.INITIAL
    pair = CryptoPair()
    pair.setup_initial(cid=key_cid, is_client=not sent_by_client, version=header.version or 1)
    _, payload, number = pair.decrypt_packet(datagram[: header.packet_length], buf.tell(), 0)
    opened = Opened(
        header.packet_type, header.destination_cid, header.source_cid, header.token, number
    )
    frames = Buffer(data=payload)
    while not frames.eof():
        frame_type = frames.pull_uint_var()
        if frame_type in (QuicFrameType.PADDING, QuicFrameType.PING):
            continue
        if frame_type == QuicFrameType.ACK:
            ranges, _ = pull_ack_frame(frames)
            opened.largest_acked = ranges.bounds().stop - 1
        elif frame_type == QuicFrameType.CRYPTO:
            offset = frames.pull_uint_var()
            opened.crypto.append((offset, frames.pull_bytes(frames.pull_uint_var())))
        elif frame_type == QuicFrameType.TRANSPORT_CLOSE:
            code = frames.pull_uint_var()
            frames.pull_uint_var()
            opened.close = (code, frames.pull_bytes(frames.pull_uint_var()))
            break
        else:
            raise AssertionError(f"unexpected frame 0x{frame_type:x}")
    return opened


def client_initial(
    *,
    key_cid: bytes,
    destination_cid: bytes,
    source_cid: bytes,
    packet_number: int,
    crypto_offset: int,
    crypto: bytes,
    ack: int | None = None,
    token: bytes = b"",
) -> bytes:
    """A client Initial datagram (padded to 1200 bytes) carrying ``crypto`` at ``crypto_offset``."""
    pair = CryptoPair()
    pair.setup_initial(cid=key_cid, is_client=True, version=QuicProtocolVersion.VERSION_1)
    builder = QuicPacketBuilder(
        host_cid=source_cid,
        peer_cid=destination_cid,
        version=QuicProtocolVersion.VERSION_1,
        is_client=True,
        max_datagram_size=1200,
        packet_number=packet_number,
        peer_token=token,
    )
    builder.start_packet(QuicPacketType.INITIAL, pair)
    if ack is not None:  # RFC 9000 §19.3: largest, delay, one range of one packet
        buf = builder.start_frame(QuicFrameType.ACK, capacity=64)
        for value in (ack, 0, 0, 0):
            buf.push_uint_var(value)
    buf = builder.start_frame(QuicFrameType.CRYPTO, capacity=16 + len(crypto))
    buf.push_uint_var(crypto_offset)
    buf.push_uint16(len(crypto) | 0x4000)
    buf.push_bytes(crypto)
    datagrams, _ = builder.flush()
    assert len(datagrams) == 1 and len(datagrams[0]) >= 1200
    return datagrams[0]


def with_cookie(client_hello: bytes, cookie: bytes) -> bytes:
    """ClientHello2 for a cookie-only HRR: ClientHello1 plus the cookie extension."""
    hello = pull_client_hello(client_hello[4:])
    extensions = (*hello.extensions, (int(ExtensionType.cookie), cookie_body(cookie)))
    return push_client_hello(dataclasses.replace(hello, extensions=extensions))


def hrr_cookie(hrr: bytes) -> bytes:
    server_hello = pull_server_hello(hrr[4:])
    assert server_hello.random == HELLO_RETRY_REQUEST_RANDOM
    body = dict(server_hello.extensions)[ExtensionType.cookie]
    return body[2:]


@dataclass
class Exchange:
    """Client Hello1 → HRR, with everything a test needs to answer it."""

    front: InitialFront
    client_hello: bytes  # ClientHello1
    original_dcid: bytes
    client_cid: bytes
    hrr_datagram: bytes
    hrr_packet: Opened

    @property
    def hrr(self) -> bytes:
        return self.hrr_packet.crypto_at(0)

    def client_hello2(
        self,
        *,
        peer: tuple[str, int] = CLIENT,
        now: float = NOW,
        crypto: bytes | None = None,
        ack: bool = True,
    ) -> Any:
        """The second Initial, carrying ``crypto`` (default: ClientHello1 + the HRR's cookie)."""
        datagram = client_initial(
            key_cid=self.original_dcid,
            destination_cid=self.hrr_packet.source_cid,
            source_cid=self.client_cid,
            packet_number=1,
            crypto_offset=len(self.client_hello),
            crypto=crypto or with_cookie(self.client_hello, hrr_cookie(self.hrr)),
            ack=self.hrr_packet.packet_number if ack else None,
        )
        return self.front.receive(datagram, peer, now)


def first_exchange(front: InitialFront | None = None, **config_options: Any) -> Exchange:
    config = dataclasses.replace(CONFIG, **config_options) if config_options else CONFIG
    front = front or InitialFront(config)
    _, datagrams = aioquic_client()
    opened = open_initial(datagrams[0], _dcid(datagrams[0]), sent_by_client=True)
    result = front.receive(datagrams[0], CLIENT, NOW)
    assert isinstance(result, Reply) and result.kind is ReplyKind.HRR, result
    return Exchange(
        front=front,
        client_hello=opened.crypto_at(0),
        original_dcid=opened.destination_cid,
        client_cid=opened.source_cid,
        hrr_datagram=result.datagram,
        hrr_packet=open_initial(result.datagram, opened.destination_cid, sent_by_client=False),
    )


def _dcid(datagram: bytes) -> bytes:
    return pull_quic_header(
        Buffer(data=datagram), host_cid_length=SERVER_CID_LENGTH
    ).destination_cid


def crypto_error(description: AlertDescription) -> int:
    return QuicErrorCode.CRYPTO_ERROR + int(description)


# ---------------------------------------------------------------------------------------------
# The first Initial: a stateless HRR.


def test_first_initial_gets_a_stateless_hrr() -> None:
    exchange = first_exchange()
    front, packet = exchange.front, exchange.hrr_packet
    # One padded datagram (RFC 9000 §14.1) for one 1200-byte datagram: 1x, within 3x (§8.1).
    assert len(exchange.hrr_datagram) == 1200
    assert packet.destination_cid == exchange.client_cid
    assert len(packet.source_cid) == SERVER_CID_LENGTH
    assert front.cids.key_candidates(packet.source_cid)[0] == exchange.original_dcid
    assert packet.largest_acked == 0  # the client's Initial
    assert packet.packet_number == int(NOW * 250) % 8192
    cookie = CONFIG.cookie_keys.open(hrr_cookie(exchange.hrr), peer_binding(CLIENT))
    state = QuicCookieState.decode(cookie.app_payload)
    assert state == QuicCookieState(
        exchange.original_dcid, None, packet.packet_number, len(exchange.client_hello)
    )
    assert len(front.table) == 0
    assert front.stats.hrr_sent == 1 and front.stats.accepted == 0


def test_hrr_packet_number_moves_with_the_clock() -> None:
    front = InitialFront(CONFIG)
    _, datagrams = aioquic_client()
    numbers = set()
    for tick in range(3):
        reply = front.receive(datagrams[0], CLIENT, NOW + tick * 0.5)
        assert isinstance(reply, Reply)
        numbers.add(
            open_initial(reply.datagram, _dcid(datagrams[0]), sent_by_client=False).packet_number
        )
    assert len(numbers) == 3


def test_client_hello2_builds_the_connection_from_itself_alone() -> None:
    exchange = first_exchange()
    result = exchange.client_hello2()
    assert isinstance(result, Accept), result
    start = result.start
    assert start.key_cid == exchange.original_dcid
    assert start.host_cid == exchange.hrr_packet.source_cid
    assert start.original_dcid == exchange.original_dcid and start.retry_scid is None
    assert start.resume is not None and start.address_validated
    assert start.resume.client_crypto_offset == len(exchange.client_hello)
    assert start.resume.server_crypto_offset == len(exchange.hrr)
    assert start.resume.next_packet_number == exchange.hrr_packet.packet_number + 1

    connection = StatelessQuicConnection(
        configuration=quic_configuration(CONFIG, QuicOptions()),
        server_config=CONFIG,
        peer=CLIENT,
        start=start,
    )
    for datagram in start.datagrams:
        connection.receive_datagram(datagram, CLIENT, now=0.0)
    sent = [data for data, _ in connection.datagrams_to_send(now=0.0)]
    assert sent
    reply = open_initial(sent[0], exchange.original_dcid, sent_by_client=False)
    assert reply.source_cid == exchange.hrr_packet.source_cid
    assert reply.destination_cid == exchange.client_cid
    assert reply.packet_number > exchange.hrr_packet.packet_number
    server_hello = reply.crypto_at(len(exchange.hrr))  # CRYPTO continues after the HRR
    assert server_hello[0] == 2
    assert pull_server_hello(server_hello[4:]).random != HELLO_RETRY_REQUEST_RANDOM
    # The transport parameters in EncryptedExtensions (RFC 9000 §7.3).
    assert connection.quic_tls is not None
    (parameters,) = [d for t, d in connection.quic_tls.handshake_extensions if t == 0x39]
    decoded = pull_quic_transport_parameters(Buffer(data=parameters))
    assert decoded.original_destination_connection_id == exchange.original_dcid
    assert decoded.initial_source_connection_id == exchange.hrr_packet.source_cid
    assert decoded.retry_source_connection_id is None
    assert connection._network_paths[0].is_validated  # the cookie proved the address
    summary = (
        connection.quic_tls.server_handshake.summary
        if connection.quic_tls.server_handshake
        else None
    )
    assert summary is not None and summary.cookie_verified and summary.hello_retry


def test_client_hello2_from_another_address_is_refused() -> None:
    exchange = first_exchange()
    result = exchange.client_hello2(peer=("203.0.113.99", CLIENT[1]))
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE, result
    closed = open_initial(result.datagram, exchange.original_dcid, sent_by_client=False)
    assert closed.close is not None
    assert closed.close[0] == crypto_error(AlertDescription.decrypt_error)
    assert len(result.datagram) < 200  # a close is never padded: far below 3x
    assert exchange.front.stats.accepted == 0


def test_client_hello2_from_another_port_of_the_same_address_is_accepted() -> None:
    # The cookie binds the IP only: NAT rebinding may change the port between the ClientHellos.
    exchange = first_exchange()
    assert isinstance(exchange.client_hello2(peer=(CLIENT[0], 50001)), Accept)


def test_expired_cookie_is_refused() -> None:
    exchange = first_exchange()
    result = exchange.client_hello2(now=NOW + 31)
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE
    closed = open_initial(result.datagram, exchange.original_dcid, sent_by_client=False)
    assert closed.close is not None
    assert closed.close[0] == crypto_error(AlertDescription.illegal_parameter)


def test_cookie_for_another_connection_id_is_refused() -> None:
    exchange = first_exchange()
    other = first_exchange(exchange.front)
    datagram = client_initial(  # other's cookie, sent on exchange's connection ID
        key_cid=exchange.original_dcid,
        destination_cid=exchange.hrr_packet.source_cid,
        source_cid=exchange.client_cid,
        packet_number=1,
        crypto_offset=len(exchange.client_hello),
        crypto=with_cookie(exchange.client_hello, hrr_cookie(other.hrr)),
    )
    result = exchange.front.receive(datagram, CLIENT, NOW)
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE
    closed = open_initial(result.datagram, exchange.original_dcid, sent_by_client=False)
    assert closed.close is not None
    assert closed.close[0] == crypto_error(AlertDescription.illegal_parameter)


def test_tcp_cookie_without_quic_state_is_refused() -> None:
    exchange = first_exchange()
    state = CookieState(int(NOW), 0x1301, 0x1D, False, bytes(32), bytes(32))
    cookie = CONFIG.cookie_keys.seal(state, peer_binding(CLIENT))
    result = exchange.client_hello2(crypto=with_cookie(exchange.client_hello, cookie), ack=False)
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE


def test_client_hello2_without_cookie_is_refused() -> None:
    exchange = first_exchange()
    result = exchange.client_hello2(crypto=exchange.client_hello, ack=False)
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE
    closed = open_initial(result.datagram, exchange.original_dcid, sent_by_client=False)
    assert closed.close is not None
    assert closed.close[0] == crypto_error(AlertDescription.missing_extension)


def test_cookie_from_another_key_ring_is_refused() -> None:
    exchange = first_exchange()
    other_front = InitialFront(
        dataclasses.replace(CONFIG, cookie_keys=CookieKeyRing.generate()),
        dataclasses.replace(exchange.front.options),
    )
    exchange.front = other_front
    result = exchange.client_hello2()
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE


def test_a_fleet_sharing_keys_resumes_anywhere() -> None:
    options = QuicOptions(secret=b"k" * 32)
    first = InitialFront(CONFIG, options)
    exchange = first_exchange(first)
    exchange.front = InitialFront(CONFIG, QuicOptions(secret=b"k" * 32))  # another process
    assert isinstance(exchange.client_hello2(), Accept)


# ---------------------------------------------------------------------------------------------
# What QUIC adds to a ClientHello's rules.


def _first_initial_with(change: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
    _, datagrams = aioquic_client()
    opened = open_initial(datagrams[0], _dcid(datagrams[0]), sent_by_client=True)
    hello = change(opened.crypto_at(0))
    datagram = client_initial(
        key_cid=opened.destination_cid,
        destination_cid=opened.destination_cid,
        source_cid=opened.source_cid,
        packet_number=0,
        crypto_offset=0,
        crypto=hello,
    )
    return datagram, opened.destination_cid


def _replace_hello(client_hello: bytes, **fields: Any) -> bytes:
    hello = pull_client_hello(client_hello[4:])
    return push_client_hello(dataclasses.replace(hello, **fields))


def _refusal(change: Callable[[bytes], bytes]) -> int:
    datagram, dcid = _first_initial_with(change)
    result = InitialFront(CONFIG).receive(datagram, CLIENT, NOW)
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE, result
    closed = open_initial(result.datagram, dcid, sent_by_client=False)
    assert closed.close is not None
    return closed.close[0]


def test_non_empty_legacy_session_id_is_a_protocol_violation() -> None:
    code = _refusal(lambda ch: _replace_hello(ch, legacy_session_id=bytes(32)))
    assert code == QuicErrorCode.PROTOCOL_VIOLATION


def test_missing_transport_parameters() -> None:
    def drop(ch: bytes) -> bytes:
        hello = pull_client_hello(ch[4:])
        kept = tuple(e for e in hello.extensions if e[0] != ExtensionType.quic_transport_parameters)
        return push_client_hello(dataclasses.replace(hello, extensions=kept))

    assert _refusal(drop) == crypto_error(AlertDescription.missing_extension)


def test_no_common_alpn() -> None:
    _, datagrams = aioquic_client(alpn="hq-interop")
    result = InitialFront(CONFIG).receive(datagrams[0], CLIENT, NOW)
    assert isinstance(result, Reply) and result.kind is ReplyKind.CLOSE
    closed = open_initial(result.datagram, _dcid(datagrams[0]), sent_by_client=False)
    assert closed.close is not None
    assert closed.close[0] == crypto_error(AlertDescription.no_application_protocol)


def test_small_datagrams_and_unknown_versions() -> None:
    front = InitialFront(CONFIG)
    _, datagrams = aioquic_client()
    assert isinstance(front.receive(datagrams[0][:1100], CLIENT, NOW), Drop)
    unknown = bytearray(datagrams[0])
    unknown[1:5] = (0x1A2A3A4A).to_bytes(4, "big")
    reply = front.receive(bytes(unknown), CLIENT, NOW)
    assert isinstance(reply, Reply) and reply.kind is ReplyKind.VERSION_NEGOTIATION
    assert len(reply.datagram) < 100
    assert isinstance(front.receive(b"\x40" + bytes(1300), CLIENT, NOW), Drop)  # short header


# ---------------------------------------------------------------------------------------------
# Statelessness, measured.


class _SinkTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.bytes = 0

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent += 1
        self.bytes += len(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 4433) if name == "sockname" else default


@pytest.mark.parametrize("validation", [Validation.HRR, Validation.ADAPTIVE], ids=str)
def test_10000_spoofed_first_initials_leave_nothing_behind(validation: Validation) -> None:
    """ADAPTIVE answers the first 65 directly (a connection each, the 3x anti-amplification
    limit on what they send), then the stateless HRR and, as the rate climbs, Retries."""
    from stateless13.transports.quic_server import QuicServer

    async def main() -> tuple[int, int, int, int, int]:
        server = QuicServer(CONFIG, validation=validation)
        sink = _SinkTransport()
        server.connection_made(sink)
        # Two sets of flights: under ADAPTIVE the warm-up's first ones become connections, and
        # the same Initial again would go to its connection, not to the front.
        warm_up, flights = ([aioquic_client()[1][0] for _ in range(100)] for _ in range(2))

        def flood(start: int, count: int, flights: list[bytes]) -> None:
            for n in range(start, start + count):
                address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
                server.datagram_received(flights[n % len(flights)], (address, 1024 + n % 60000))

        # Connections other tests left for the collector are not this server's.
        gc.collect()
        elsewhere = sum(isinstance(o, StatelessQuicConnection) for o in gc.get_objects())
        flood(0, 1000, warm_up)  # warm-up: caches, interned objects
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        flood(1000, 10_000, flights)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        connections = (
            sum(isinstance(o, StatelessQuicConnection) for o in gc.get_objects()) - elsewhere
        )
        stats = server.front.stats
        answered = stats.hrr_sent + stats.retry_sent + stats.accepted
        return answered, len(server._protocols), len(server.front.table), connections, growth

    started = time.perf_counter()
    answered, protocols, partial, connections, growth = asyncio.run(main())
    elapsed = time.perf_counter() - started
    print(f"11,000 first Initials: {elapsed:.1f} s with tracemalloc, memory growth {growth} B")
    if validation is Validation.HRR:
        assert answered == 11_000  # one HRR per first Initial
        assert protocols == 0 and partial == 0 and connections == 0
    else:
        calm = QuicOptions().adaptive_handshakes + 1  # created before the gauge went on
        assert connections == calm and partial == 0
        assert answered >= 10_000  # the flood went to the front: an HRR or a Retry each
    assert growth < 64 * 1024, f"memory grew by {growth} bytes over 10,000 first Initials"


# ---------------------------------------------------------------------------------------------
# ClientHellos over several datagrams.


def test_client_hello1_over_two_datagrams() -> None:
    front = InitialFront(CONFIG)
    _, datagrams = aioquic_client(big=True)
    assert len(datagrams) == 2
    dcid = _dcid(datagrams[0])
    assert isinstance(front.receive(datagrams[0], CLIENT, NOW), Pending)
    assert len(front.table) == 1 and front.table.bytes == len(datagrams[0])
    reply = front.receive(datagrams[1], CLIENT, NOW + 0.001)
    assert isinstance(reply, Reply) and reply.kind is ReplyKind.HRR
    assert len(front.table) == 0 and front.table.bytes == 0
    packet = open_initial(reply.datagram, dcid, sent_by_client=False)
    assert packet.largest_acked == 1  # both of the client's Initials
    cookie = CONFIG.cookie_keys.open(hrr_cookie(packet.crypto_at(0)), peer_binding(CLIENT))
    first = open_initial(datagrams[0], dcid, sent_by_client=True)
    second = open_initial(datagrams[1], dcid, sent_by_client=True)
    total = sum(len(d) for _, d in first.crypto + second.crypto)
    assert QuicCookieState.decode(cookie.app_payload).client_hello_length == total > 1200
    assert len(reply.datagram) <= 3 * sum(len(d) for d in datagrams)


def test_second_fragment_first_also_works() -> None:
    front = InitialFront(CONFIG)
    _, datagrams = aioquic_client(big=True)
    assert isinstance(front.receive(datagrams[1], CLIENT, NOW), Pending)
    reply = front.receive(datagrams[0], CLIENT, NOW)
    assert isinstance(reply, Reply) and reply.kind is ReplyKind.HRR


def test_partial_client_hello_expires() -> None:
    front = InitialFront(CONFIG, QuicOptions(reassembly_timeout=1.0))
    _, datagrams = aioquic_client(big=True)
    assert isinstance(front.receive(datagrams[0], CLIENT, NOW), Pending)
    assert isinstance(front.receive(datagrams[1], CLIENT, NOW + 1.5), Pending)  # a new entry
    assert len(front.table) == 1


def test_a_flood_of_partial_client_hellos_is_bounded() -> None:
    options = QuicOptions(reassembly_entries=256, reassembly_bytes=200_000)
    front = InitialFront(CONFIG, options)
    first_fragments = [aioquic_client(big=True)[1][0] for _ in range(20)]
    _, legitimate = aioquic_client(big=True)
    started = time.perf_counter()
    for n in range(5000):
        address = f"10.1.{n >> 8 & 255}.{n & 255}"
        front.receive(first_fragments[n % 20], (address, 2000 + n), NOW + n * 1e-4)
        assert len(front.table) <= 256 and front.table.bytes <= 200_000
        if n == 4000:  # a real client's two datagrams, back to back, in the middle of it
            assert isinstance(front.receive(legitimate[0], CLIENT, NOW + n * 1e-4), Pending)
            reply = front.receive(legitimate[1], CLIENT, NOW + n * 1e-4)
            assert isinstance(reply, Reply) and reply.kind is ReplyKind.HRR
    per_fragment = (time.perf_counter() - started) / 5000
    assert front.table.evictions >= 5000 - 256
    assert front.stats.hrr_sent == 1 and front.stats.datagrams_out == 1
    print(f"partial-ClientHello flood: {per_fragment * 1e6:.0f} us per fragment, table bounded")


# ---------------------------------------------------------------------------------------------
# Retry, both, none: aioquic's own client can complete these (it never sees an HRR).


def run_in_memory(
    front: InitialFront, client: QuicConnection, first: list[bytes]
) -> dict[str, Any]:
    """Drive an aioquic client against the front and the connection it creates, in memory."""
    options = front.options
    connection: StatelessQuicConnection | None = None
    counts = {"client_datagrams": 0, "client_bytes": 0, "server_datagrams": 0, "server_bytes": 0}
    outgoing, now = first, NOW
    replies: list[ReplyKind] = []
    for _ in range(30):
        for datagram in outgoing:
            counts["client_datagrams"] += 1
            counts["client_bytes"] += len(datagram)
            if connection is None:
                result = front.receive(datagram, CLIENT, now)
                if isinstance(result, Reply):
                    replies.append(result.kind)
                    counts["server_datagrams"] += 1
                    counts["server_bytes"] += len(result.datagram)
                    client.receive_datagram(result.datagram, SERVER, now)
                elif isinstance(result, Accept):
                    connection = StatelessQuicConnection(
                        configuration=quic_configuration(front.config, options),
                        server_config=front.config,
                        peer=CLIENT,
                        start=result.start,
                    )
                    for data in result.start.datagrams:
                        connection.receive_datagram(data, CLIENT, now)
            else:
                connection.receive_datagram(datagram, CLIENT, now)
        if connection is not None:
            for data, _ in connection.datagrams_to_send(now):
                counts["server_datagrams"] += 1
                counts["server_bytes"] += len(data)
                client.receive_datagram(data, SERVER, now)
        now += 0.005
        outgoing = [data for data, _ in client.datagrams_to_send(now)]
        if not outgoing:
            break
    completed = False
    while (event := client.next_event()) is not None:
        completed = completed or isinstance(event, events.HandshakeCompleted)
    return {"completed": completed, "connection": connection, "replies": replies, **counts}


@pytest.mark.parametrize("validation", [Validation.NONE, Validation.RETRY], ids=str)
def test_aioquic_client_without_hrr(validation: Validation) -> None:
    front = InitialFront(CONFIG, validation=validation)
    client, first = aioquic_client()
    outcome = run_in_memory(front, client, first)
    assert outcome["completed"], outcome
    connection = outcome["connection"]
    assert connection is not None and connection.quic_tls.summary is not None
    summary = connection.quic_tls.summary
    assert not summary.hello_retry and summary.group == NamedGroup.x25519
    (parameters,) = [d for t, d in connection.quic_tls.handshake_extensions if t == 0x39]
    decoded = pull_quic_transport_parameters(Buffer(data=parameters))
    assert decoded.original_destination_connection_id == client.original_destination_connection_id
    if validation is Validation.RETRY:
        assert outcome["replies"] == [ReplyKind.RETRY]
        assert decoded.retry_source_connection_id == connection.start.key_cid
        assert connection.start.address_validated
    else:
        assert outcome["replies"] == []
        assert decoded.retry_source_connection_id is None


@pytest.mark.parametrize("validation", [Validation.NONE, Validation.RETRY], ids=str)
def test_aioquic_client_resumes_with_our_ticket(validation: Validation) -> None:
    """Our NewSessionTickets reach a QUIC client in 1-RTT CRYPTO frames, and its next connection
    resumes with one (psk_dhe_ke, no 0-RTT: the tickets allow no early data), after a Retry too.
    (aioquic's client takes no HelloRetryRequest: the stateless HRR's resumption is checked with
    Python ssl's client in tests/memory/test_resumption.py.)"""
    front = InitialFront(CONFIG, validation=validation)
    tickets: list[SessionTicket] = []
    client, first = aioquic_client(session_ticket_handler=tickets.append)
    first_outcome = run_in_memory(front, client, first)
    assert first_outcome["completed"] and len(tickets) == CONFIG.tickets, first_outcome
    assert tickets[0].max_early_data_size is None  # no 0-RTT offered
    client, first = aioquic_client(session_ticket=tickets[0])
    outcome = run_in_memory(front, client, first)
    assert outcome["completed"], outcome
    summary = outcome["connection"].quic_tls.summary
    assert summary is not None and summary.resumed
    assert not summary.hello_retry and summary.signature_scheme is None


def test_both_retry_then_stateless_hrr() -> None:
    front = InitialFront(CONFIG, validation=Validation.BOTH)
    client, first = aioquic_client()
    original_dcid = _dcid(first[0])
    retry = front.receive(first[0], CLIENT, NOW)
    assert isinstance(retry, Reply) and retry.kind is ReplyKind.RETRY and len(retry.datagram) < 200
    client.receive_datagram(retry.datagram, SERVER, NOW)
    (second, _), *_ = client.datagrams_to_send(NOW)
    header = pull_quic_header(Buffer(data=second), host_cid_length=SERVER_CID_LENGTH)
    assert header.token
    hrr = front.receive(second, CLIENT, NOW)
    assert isinstance(hrr, Reply) and hrr.kind is ReplyKind.HRR
    retry_scid = header.destination_cid
    packet = open_initial(hrr.datagram, retry_scid, sent_by_client=False)
    cookie = CONFIG.cookie_keys.open(hrr_cookie(packet.crypto_at(0)), peer_binding(CLIENT))
    state = QuicCookieState.decode(cookie.app_payload)
    assert state.original_dcid == original_dcid and state.retry_scid == retry_scid
    opened = open_initial(second, retry_scid, sent_by_client=True)
    datagram = client_initial(
        key_cid=retry_scid,
        destination_cid=packet.source_cid,
        source_cid=opened.source_cid,
        packet_number=opened.packet_number + 1,
        crypto_offset=len(opened.crypto_at(0)),
        crypto=with_cookie(opened.crypto_at(0), hrr_cookie(packet.crypto_at(0))),
        token=header.token,
    )
    accepted = front.receive(datagram, CLIENT, NOW)
    assert isinstance(accepted, Accept), accepted
    assert accepted.start.original_dcid == original_dcid
    assert accepted.start.retry_scid == retry_scid == accepted.start.key_cid
    assert accepted.start.validation == "retry+cookie"


def test_invalid_retry_token() -> None:
    front = InitialFront(CONFIG, validation=Validation.RETRY)
    client, first = aioquic_client()
    retry = front.receive(first[0], CLIENT, NOW)
    assert isinstance(retry, Reply)
    client.receive_datagram(retry.datagram, SERVER, NOW)
    (second, _), *_ = client.datagrams_to_send(NOW)
    refused = front.receive(second, ("203.0.113.5", 40000), NOW)  # another address
    assert isinstance(refused, Reply) and refused.kind is ReplyKind.CLOSE
    expired = front.receive(second, CLIENT, NOW + 60)
    assert isinstance(expired, Reply) and expired.kind is ReplyKind.CLOSE
    assert isinstance(front.receive(second, CLIENT, NOW + 1), Accept)


# ---------------------------------------------------------------------------------------------
# Pieces.


def test_connection_ids_encode_every_client_length() -> None:
    cids = ConnectionIds(b"s" * 32)
    for length in range(8, 21):
        for _ in range(50):
            key = os.urandom(length)
            ours = cids.encode(key)
            assert len(ours) == SERVER_CID_LENGTH
            assert key in cids.key_candidates(ours)
    assert ConnectionIds(b"t" * 32).encode(b"12345678") != cids.encode(b"12345678")
    with pytest.raises(ValueError):
        cids.encode(b"short")


def test_cookie_state_round_trip() -> None:
    for retry in (None, b"r" * 20):
        state = QuicCookieState(b"o" * 20, retry, 8191, 16384)
        assert len(state.encode()) <= 64
        assert QuicCookieState.decode(state.encode()) == state
    with pytest.raises(ValueError):
        QuicCookieState.decode(b"app payload of someone else")


OLD_KEY, NEW_KEY = b"o" * 32, b"n" * 32


def test_retry_tokens() -> None:
    tokens = RetryTokens(CookieKeyRing.from_bytes(OLD_KEY), lifetime=10)
    token = tokens.seal(CLIENT, b"odcid-12", b"r" * 20, NOW)
    assert tokens.open(token, CLIENT, b"r" * 20, NOW + 1) == b"odcid-12"
    for peer, dcid, now in [
        (("198.51.100.8", 1), b"r" * 20, NOW),
        (CLIENT, b"x" * 20, NOW),
        (CLIENT, b"r" * 20, NOW + 11),
    ]:
        with pytest.raises(InvalidToken, match="Retry token"):
            tokens.open(token, peer, dcid, now)
    for position in (0, 1, 2, 5, len(token) // 2, len(token) - 1):  # header, nonce, body, tag
        tampered = bytearray(token)
        tampered[position] ^= 1
        with pytest.raises(InvalidToken):
            tokens.open(bytes(tampered), CLIENT, b"r" * 20, NOW)


def test_retry_tokens_rotate_with_the_cookie_keys() -> None:
    """The Retry token and the cookie share one key ring: rotating it rotates both."""
    token = RetryTokens(CookieKeyRing.from_bytes(OLD_KEY), 10).seal(
        CLIENT, b"o" * 8, b"r" * 20, NOW
    )
    rotated = RetryTokens(CookieKeyRing.from_bytes(NEW_KEY, OLD_KEY), 10)  # the new key first
    assert rotated.open(token, CLIENT, b"r" * 20, NOW) == b"o" * 8
    with pytest.raises(InvalidToken, match="unknown key id"):
        RetryTokens(CookieKeyRing.from_bytes(NEW_KEY), 10).open(token, CLIENT, b"r" * 20, NOW)


def test_a_retry_token_is_never_a_cookie_nor_a_cookie_a_retry_token() -> None:
    keys = CookieKeyRing.from_bytes(OLD_KEY)
    token = RetryTokens(keys, 10).seal(CLIENT, b"o" * 8, b"r" * 20, NOW)
    with pytest.raises(DecryptError):
        keys.open(token, peer_binding(CLIENT))
    cookie = keys.seal(
        CookieState(int(NOW), 0x1301, 0x1D, False, bytes(32), bytes(32)), peer_binding(CLIENT)
    )
    with pytest.raises(InvalidToken):
        RetryTokens(keys, 10).open(cookie, CLIENT, b"r" * 20, NOW)


def test_quic_tls_maps_alerts_and_refuses_key_update() -> None:
    engine = QuicTLS(CONFIG, peer=CLIENT, verified=None)
    buffers = {
        e: Buffer(capacity=4096)
        for e in (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE, tls.Epoch.ONE_RTT)
    }
    with pytest.raises(tls.Alert) as raised:
        engine.handle_message(b"\x02\x00\x00\x01\x00", buffers)  # a ServerHello from a client
    assert raised.value.description == tls.AlertDescription.unexpected_message
    assert engine.error is not None

    engine = QuicTLS(CONFIG, peer=CLIENT, verified=None)
    engine.server_handshake = object()  # type: ignore[assignment]  # pretend the handshake is done
    engine.receive_epoch = tls.Epoch.ONE_RTT
    with pytest.raises(tls.Alert) as raised:
        engine.handle_message(b"\x18\x00\x00\x01\x00", buffers)  # KeyUpdate
    assert raised.value.description == tls.AlertDescription.unexpected_message


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        QuicOptions(secret=b"short")
    with pytest.raises(ValueError):
        InitialFront(CONFIG, validation="sometimes")
