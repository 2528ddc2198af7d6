"""DTLS 1.3 handshake fragments, reassembly, ACKs and retransmission (stateless13/dtls_flight.py).

* Fragmenting and parsing the 12-byte DTLSHandshake header (RFC 9147 §5.2, §5.5).
* Reassembly by hypothesis: any permutation and duplication of fragments (from several
  fragmentations, so overlapping) gives the messages back in order; arbitrary fragments raise
  only our AlertError subclasses and never make the reassembler hold more than its bounds.
* ACK bodies (§7), with wolfSSL's as a vector.
* The retransmission state machine (§5.8, §7.2) over a real record layer: the timer's values,
  giving up, partial ACKs that resend only what is missing, and a lossy network that still
  delivers the flight.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless13.alerts import (
    AlertError,
    DecodeError,
    IllegalParameter,
    LocalProtocolError,
    UnexpectedMessage,
)
from stateless13.dtls_flight import (
    HANDSHAKE_HEADER_SIZE,
    MAX_ACK_RECORDS,
    FlightMessage,
    FlightSender,
    FragmentStatus,
    HandshakeFragment,
    HandshakeReassembler,
    encode_ack,
    fragment_message,
    parse_ack,
    parse_fragments,
)
from stateless13.dtls_record import DtlsContentType, DtlsRecordLayer
from stateless13.messages import CipherSuite
from stateless13.primitives import DTLS_SUITES

SUITE = DTLS_SUITES[CipherSuite.TLS_AES_128_GCM_SHA256]


def tls_message(msg_type: int, body: bytes) -> bytes:
    return bytes((msg_type,)) + len(body).to_bytes(3, "big") + body


def fragments_of(message: bytes, seq: int, size: int) -> list[HandshakeFragment]:
    return parse_fragments(b"".join(fragment_message(message, seq, size)))


# ---------------------------------------------------------------------------------------------
# The header (§5.2)


def test_fragment_and_parse() -> None:
    message = tls_message(11, bytes(range(256)) * 4)
    fragments = fragment_message(message, 7, 300)
    assert [len(f) for f in fragments] == [300, 300, 300, 12 + 1024 - 3 * 288]
    parsed = parse_fragments(b"".join(fragments))
    assert [(f.msg_type, f.length, f.message_seq) for f in parsed] == [(11, 1024, 7)] * 4
    assert [(f.fragment_offset, f.fragment_length) for f in parsed] == [
        (0, 288),
        (288, 288),
        (576, 288),
        (864, 160),
    ]
    assert b"".join(f.body for f in parsed) == message[4:]
    assert [f.encode() for f in parsed] == fragments
    [empty] = fragment_message(tls_message(5, b""), 0, 100)  # a message with an empty body
    assert empty == bytes.fromhex("05000000" + "0000" + "000000" + "000000")


def test_fragment_misuse() -> None:
    with pytest.raises(LocalProtocolError):
        fragment_message(b"\x01\x00\x00\x05abc", 0, 100)  # not one TLS-format message
    with pytest.raises(LocalProtocolError):
        fragment_message(tls_message(1, b"x"), 0, HANDSHAKE_HEADER_SIZE)
    with pytest.raises(LocalProtocolError):
        fragment_message(tls_message(1, b"x"), 1 << 16, 100)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        bytes(11),  # a header cut short
        bytes.fromhex("010000100000000000000004") + b"abc",  # a body cut short
        bytes.fromhex("010000040000000002000004") + b"abcd",  # offset 2 + 4 past length 4
        bytes.fromhex("010000040000000000000004") + b"abcd" + b"\x01",  # trailing byte
    ],
)
def test_parse_fragments_errors(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_fragments(payload)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_parse_fragments_raises_only_decode_error(payload: bytes) -> None:
    try:
        fragments = parse_fragments(payload)
    except DecodeError:
        return
    assert b"".join(f.encode() for f in fragments) == payload


# ---------------------------------------------------------------------------------------------
# Reassembly (§5.2, §5.5)

MESSAGES = [
    tls_message(2, bytes(range(90))),  # message_seq 0
    tls_message(8, b"\x00\x00"),
    tls_message(11, bytes(range(256)) * 9),
    tls_message(15, b"\x04\x03" + bytes(70)),
    tls_message(20, bytes(32)),
]


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(30, 400), min_size=1, max_size=3),
    seed=st.integers(0, 1 << 32),
    duplicates=st.integers(0, 20),
)
def test_any_order_and_duplication_reassembles(
    sizes: list[int], seed: int, duplicates: int
) -> None:
    """Fragmentations at several sizes overlap one another (§5.5: retransmissions with another
    PMTU); shuffled and duplicated, they still give each message back, once, in order."""
    pool = [
        fragment
        for size in sizes
        for seq, message in enumerate(MESSAGES)
        for fragment in fragments_of(message, seq, size)
    ]
    rng = random.Random(seed)
    order = [*pool, *(rng.choice(pool) for _ in range(duplicates))]
    rng.shuffle(order)
    # As many ranges as fragments: the default (64) would drop some, to be sent again.
    reassembler = HandshakeReassembler(max_ahead=len(MESSAGES), max_ranges=len(pool))
    delivered = []
    for fragment in order:
        status = reassembler.feed(fragment, epoch=0 if fragment.message_seq == 0 else 2)
        assert status != FragmentStatus.DROPPED
        delivered += reassembler.pop_messages()
    assert delivered == [(seq, 0 if seq == 0 else 2, m) for seq, m in enumerate(MESSAGES)]
    assert reassembler.next_message_seq == len(MESSAGES) and reassembler.buffered == 0
    assert not reassembler.partial


def test_statuses_and_stale_fragments() -> None:
    reassembler = HandshakeReassembler(next_message_seq=1)  # after a HelloRetryRequest
    first, second = fragments_of(tls_message(1, bytes(100)), 1, 80)
    assert reassembler.feed(first) == FragmentStatus.NEW
    assert reassembler.feed(first) == FragmentStatus.DUPLICATE
    assert reassembler.pop_messages() == [] and reassembler.partial
    assert reassembler.feed(second) == FragmentStatus.NEW
    assert reassembler.pop_messages() == [(1, 0, tls_message(1, bytes(100)))]
    assert not reassembler.take_peer_retransmission()
    assert reassembler.feed(second) == FragmentStatus.STALE  # the peer resent its flight
    [old_hello] = fragments_of(tls_message(1, bytes(10)), 0, 100)
    assert reassembler.feed(old_hello) == FragmentStatus.STALE
    assert reassembler.take_peer_retransmission() and not reassembler.take_peer_retransmission()
    assert reassembler.stale_fragments == 2
    [empty] = fragments_of(tls_message(5, b""), 2, 100)
    assert reassembler.feed(empty) == FragmentStatus.NEW
    assert reassembler.pop_messages() == [(2, 0, tls_message(5, b""))]


def test_conflicting_fragments_are_fatal() -> None:
    message = tls_message(11, bytes(200))
    first, *_ = fragments_of(message, 0, 100)
    changed = HandshakeFragment(11, 200, 0, 50, b"\x01" + bytes(99))  # overlaps, one byte differs
    for other, error in [
        (changed, IllegalParameter),  # §5.5
        (HandshakeFragment(11, 201, 0, 100, bytes(10)), IllegalParameter),  # another length
        (HandshakeFragment(12, 200, 0, 100, bytes(10)), IllegalParameter),  # another type
        (HandshakeFragment(11, 200, 0, 195, bytes(10)), DecodeError),  # past the message's end
        (HandshakeFragment(11, 1 << 20, 1, 0, b""), DecodeError),  # over max_message_length
    ]:
        reassembler = HandshakeReassembler()
        reassembler.feed(first)
        with pytest.raises(error):
            reassembler.feed(other)
    reassembler = HandshakeReassembler()
    reassembler.feed(first, epoch=0)
    with pytest.raises(UnexpectedMessage):  # TLS: "handshake message split across a key change"
        reassembler.feed(HandshakeFragment(11, 200, 0, 100, bytes(10)), epoch=2)
    reassembler = HandshakeReassembler()
    reassembler.feed(first)
    assert reassembler.feed(HandshakeFragment(11, 200, 0, 50, bytes(60))) == FragmentStatus.NEW


def test_bounds_drop_and_never_evict() -> None:
    """Messages ahead share max_buffered - max_message_length; the next always fits."""
    reassembler = HandshakeReassembler(max_message_length=1000, max_buffered=1500, max_ahead=3)
    assert reassembler.feed(HandshakeFragment(11, 400, 4, 0, b"x")) == FragmentStatus.DROPPED
    assert reassembler.feed(HandshakeFragment(11, 400, 1, 0, b"x")) == FragmentStatus.NEW
    assert reassembler.feed(HandshakeFragment(11, 200, 2, 0, b"x")) == FragmentStatus.DROPPED
    assert reassembler.feed(HandshakeFragment(11, 100, 3, 0, b"x")) == FragmentStatus.NEW
    assert reassembler.feed(HandshakeFragment(2, 1000, 0, 0, bytes(10))) == FragmentStatus.NEW
    assert reassembler.buffered == 1500 and reassembler.dropped_fragments == 2
    reassembler.feed(HandshakeFragment(2, 1000, 0, 10, bytes(990)))
    [(seq, _, message)] = reassembler.pop_messages()
    assert seq == 0 and len(message) == 1004 and reassembler.buffered == 500


def test_fragments_of_too_many_ranges_are_dropped() -> None:
    reassembler = HandshakeReassembler(max_ranges=3)
    for offset in (0, 10, 20):
        assert reassembler.feed(HandshakeFragment(1, 100, 0, offset, b"a")) == FragmentStatus.NEW
    assert reassembler.feed(HandshakeFragment(1, 100, 0, 30, b"a")) == FragmentStatus.DROPPED
    assert reassembler.feed(HandshakeFragment(1, 100, 0, 1, bytes(9))) == FragmentStatus.NEW
    assert reassembler.feed(HandshakeFragment(1, 100, 0, 30, b"a")) == FragmentStatus.NEW


FRAGMENTS = st.builds(
    HandshakeFragment,
    msg_type=st.sampled_from([1, 2, 11]),
    length=st.integers(0, 3000),
    message_seq=st.integers(0, 9),
    fragment_offset=st.integers(0, 3000),
    body=st.binary(max_size=600).map(lambda body: body if len(body) % 3 else bytes(len(body))),
)


@settings(max_examples=400, deadline=None)
@given(fragments=st.lists(FRAGMENTS, max_size=40), pops=st.lists(st.booleans(), max_size=40))
def test_arbitrary_fragments_raise_alerts_only_and_memory_stays_bounded(
    fragments: list[HandshakeFragment], pops: list[bool]
) -> None:
    bound = {"max_message_length": 2000, "max_buffered": 3000, "max_ahead": 3, "max_ranges": 4}
    reassembler = HandshakeReassembler(**bound)
    for index, fragment in enumerate(fragments):
        try:
            reassembler.feed(fragment, epoch=fragment.msg_type % 2)
        except AlertError:
            reassembler = HandshakeReassembler(**bound)  # fatal: the connection is over
        if index < len(pops) and pops[index]:
            reassembler.pop_messages()
        assert reassembler.buffered <= 3000
        held = reassembler._pending
        assert len(held) <= 4  # max_ahead + 1 messages in the making
        assert all(len(p.ranges) <= 4 and len(p.data) == 4 + p.length for p in held.values())


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.binary(max_size=120), max_size=8))
def test_arbitrary_records_raise_alerts_only(payloads: list[bytes]) -> None:
    reassembler = HandshakeReassembler(max_message_length=64, max_buffered=128)
    for payload in payloads:
        try:
            for fragment in parse_fragments(payload):
                reassembler.feed(fragment)
        except AlertError:
            continue
        assert reassembler.buffered <= 128


# ---------------------------------------------------------------------------------------------
# ACK (§7)


def test_ack_encoding() -> None:
    # wolfSSL's ACK of our Finished (test_dtls_record.py decrypts it): epoch 2, record 0
    wolfssl = bytes.fromhex("0010" + "0000000000000002" + "0000000000000000")
    assert parse_ack(wolfssl) == [(2, 0)] and encode_ack([(2, 0)]) == wolfssl
    assert encode_ack([]) == b"\x00\x00" and parse_ack(b"\x00\x00") == []
    assert encode_ack([(3, 1), (2, 5), (3, 1), (2, 0)]) == encode_ack([(2, 0), (2, 5), (3, 1)])
    largest = [(1 << 64) - 1, (1 << 64) - 1]
    assert parse_ack(encode_ack([(largest[0], largest[1])])) == [(largest[0], largest[1])]
    with pytest.raises(LocalProtocolError):
        encode_ack([(0, seq) for seq in range(MAX_ACK_RECORDS + 1)])
    with pytest.raises(LocalProtocolError):
        encode_ack([(1 << 64, 0)])


@pytest.mark.parametrize(
    "data", [b"", b"\x00", b"\x00\x10" + bytes(15), b"\x00\x0f" + bytes(15), b"\x00\x00\x00"]
)
def test_malformed_acks(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_ack(data)


@settings(max_examples=300, deadline=None)
@given(
    numbers=st.lists(
        st.tuples(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 48) - 1)), max_size=50
    ),
    junk=st.binary(max_size=80),
)
def test_ack_round_trip_and_junk(numbers: list[tuple[int, int]], junk: bytes) -> None:
    assert parse_ack(encode_ack(numbers)) == sorted(set(numbers))
    with contextlib.suppress(DecodeError):
        parse_ack(junk)


# ---------------------------------------------------------------------------------------------
# Retransmission (§5.8, §7.2)

CERTIFICATE = tls_message(11, bytes(range(256)) * 12)  # 3076 bytes: three datagrams' worth
FLIGHT = [
    FlightMessage(0, 1, tls_message(2, bytes(90))),  # ServerHello, in clear
    FlightMessage(2, 2, tls_message(8, b"\x00\x00")),
    FlightMessage(2, 3, CERTIFICATE),
    FlightMessage(2, 4, tls_message(15, bytes(74))),
    FlightMessage(2, 5, tls_message(20, bytes(32))),
]


class Peer:
    """The client's side: a record layer with the server's keys, and a reassembler."""

    def __init__(self) -> None:
        self.records = DtlsRecordLayer()
        self.records.install_read(2, SUITE, bytes(32))
        self.reassembler = HandshakeReassembler(next_message_seq=1)
        self.messages: list[tuple[int, int, bytes]] = []
        self.pieces: list[tuple[int, int, int]] = []  # (message_seq, offset, length) received

    def receive(self, datagram: bytes) -> list[tuple[int, int]]:
        """The record numbers of the datagram's handshake records (what an ACK would name)."""
        numbers = []
        for record in self.records.open_datagram(datagram):
            assert record.content_type == DtlsContentType.handshake
            for fragment in parse_fragments(record.data):
                status = self.reassembler.feed(fragment, record.epoch)
                assert status != FragmentStatus.DROPPED
                self.pieces.append(
                    (fragment.message_seq, fragment.fragment_offset, fragment.fragment_length)
                )
            numbers.append(record.record_number)
        self.messages += self.reassembler.pop_messages()
        return numbers


def server(max_datagram_size: int = 1200) -> FlightSender:
    records = DtlsRecordLayer(max_datagram_size=max_datagram_size)
    records.install_write(2, SUITE, bytes(32))
    return FlightSender(records)


def expected_messages() -> list[tuple[int, int, bytes]]:
    return [(m.message_seq, m.epoch, m.message) for m in FLIGHT]


@pytest.mark.parametrize("size", [1200, 576, 200, 64, 20000])
def test_a_flight_fits_the_pmtu_and_arrives(size: int) -> None:
    sender, peer = server(size), Peer()
    datagrams = sender.send(FLIGHT, now=0.0)
    assert all(len(d) <= size for d in datagrams)
    if size == 1200:
        assert len(datagrams) == 3  # 3294 bytes of messages, 12 fragments, 4 records: packed
    for datagram in datagrams:
        peer.receive(datagram)
    assert peer.messages == expected_messages()
    assert sender.waiting and sender.next_timeout() == 1.0 and sender.transmissions == 1


def test_timer_doubles_then_gives_up() -> None:
    """§5.8.2: 1 s doubling; with give_up_after = 60 s the flight goes out at 0, 1, 3, 7, 15
    and 31 s, and fails at 63 s."""
    sender = server()
    sent = [0.0]
    sender.send(FLIGHT, now=0.0)
    assert sender.on_timeout(0.999) == []
    while (deadline := sender.next_timeout()) is not None:
        datagrams = sender.on_timeout(deadline)
        if datagrams:
            sent.append(deadline)
    assert sent == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0]
    assert sender.failed and not sender.waiting and sender.transmissions == 6
    with pytest.raises(LocalProtocolError):
        sender.send(FLIGHT, now=64.0)


def test_timer_stops_at_max_timeout() -> None:
    records = DtlsRecordLayer()
    records.install_write(2, SUITE, bytes(32))
    sender = FlightSender(records, max_timeout=4.0, give_up_after=1000.0)
    sender.send(FLIGHT[:1], now=0.0)
    deadlines = []
    for _ in range(6):
        deadline = sender.next_timeout()
        assert deadline is not None
        deadlines.append(deadline)
        assert sender.on_timeout(deadline)
    assert deadlines == [1.0, 3.0, 7.0, 11.0, 15.0, 19.0]


def test_each_transmission_uses_new_record_numbers_and_resends_everything() -> None:
    sender, peer = server(), Peer()
    first = [n for d in sender.send(FLIGHT, now=0.0) for n in peer.receive(d)]
    again = [n for d in sender.on_timeout(1.0) for n in peer.receive(d)]
    assert len(first) == len(again) and not set(first) & set(again)
    assert first[0] == (0, 0) and (0, 1) in again  # ServerHello, in clear, twice
    assert peer.messages == expected_messages()
    assert peer.reassembler.stale_fragments == len(peer.pieces) // 2


def test_a_partial_ack_resends_only_what_is_missing() -> None:
    sender, peer = server(), Peer()
    datagrams = sender.send(FLIGHT, now=0.0)
    lost = datagrams[1]  # the middle of the Certificate
    numbers = [n for d in datagrams if d is not lost for n in peer.receive(d)]
    received = set(peer.pieces)
    resent = sender.on_ack(numbers, now=0.5)
    assert len(resent) == 1 and len(resent[0]) == len(lost)
    peer.pieces = []
    peer.receive(resent[0])
    assert not set(peer.pieces) & received
    assert {seq for seq, _, _ in peer.pieces} == {3}  # the Certificate's missing bytes only
    assert peer.messages == expected_messages()
    assert sender.next_timeout() == 1.5  # re-armed, not doubled
    assert sender.on_ack(peer.receive(b""), now=0.6) == []  # rate limited (and nothing new)


def test_a_complete_ack_stops_the_timer_and_measures_the_round_trip() -> None:
    sender, peer = server(), Peer()
    numbers = [n for d in sender.send(FLIGHT, now=10.0) for n in peer.receive(d)]
    assert sender.on_ack(numbers[:2], now=10.3)  # partial: the rest goes again
    assert sender.on_ack(numbers[2:], now=10.4) == []
    assert not sender.waiting and sender.next_timeout() is None
    assert sender.on_timeout(100.0) == [] and sender.on_ack(numbers, 100.0) == []
    # Sent twice: no round trip measured, the timer keeps its value (§5.8.2).
    assert sender.timeout == 1.0
    peer = Peer()
    numbers = [n for d in sender.send(FLIGHT, now=20.0) for n in peer.receive(d)]
    sender.on_ack(numbers, now=20.2)
    assert sender.timeout == pytest.approx(0.3)  # 1.5 x 0.2 s
    sender.send(FLIGHT, now=30.0)
    sender.acknowledge_all(now=30.01)  # implicit, by the peer's next flight
    assert sender.timeout == sender.min_timeout == 0.1
    assert sender.next_timeout() is None


def test_empty_acks_and_peer_retransmissions_resend_rate_limited() -> None:
    sender = server()
    sender.send(FLIGHT, now=0.0)
    assert len(sender.on_ack([], now=0.1)) == 3  # §7.1: an empty ACK shortcuts the timer
    assert sender.on_ack([], now=0.2) == []  # within min_resend_interval of that resend
    assert sender.on_peer_retransmission(now=0.3) == []
    assert len(sender.on_peer_retransmission(now=0.4)) == 3
    assert sender.on_ack([(2, 999), (5, 0)], now=0.5) == []  # unknown numbers: rate limited
    assert sender.next_timeout() == pytest.approx(1.4) and sender.transmissions == 3


def test_a_new_flight_forgets_the_old_ones_record_numbers() -> None:
    sender, peer = server(), Peer()
    old = [n for d in sender.send(FLIGHT[:1], now=0.0) for n in peer.receive(d)]
    sender.send(FLIGHT[1:2], now=1.0)
    assert sender.on_ack(old, now=2.0)  # retires nothing of the new flight: it goes again
    assert sender.waiting


def lossy_exchange(seed: int, loss: float, size: int) -> tuple[FlightSender, Peer]:
    """Each datagram is lost with probability ``loss``; the peer ACKs what it got after each
    burst (an ACK may be lost too), 50 ms later; the timer and the ACKs do the rest."""
    rng = random.Random(seed)
    sender, peer = server(size), Peer()
    now = 0.0
    burst = sender.send(FLIGHT, now)
    for _ in range(200):
        numbers = [n for d in burst if rng.random() >= loss for n in peer.receive(d)]
        now += 0.05
        burst = []
        if numbers and rng.random() >= loss:
            burst = sender.on_ack(numbers, now)
        if not sender.waiting:
            break
        if not burst:
            deadline = sender.next_timeout()
            assert deadline is not None
            now = max(now, deadline)
            burst = sender.on_timeout(now)
        if sender.failed:
            break
    return sender, peer


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 1 << 32), loss=st.floats(0.0, 0.7), size=st.sampled_from([200, 1200]))
def test_a_lossy_network_delivers_the_flight_or_fails_cleanly(
    seed: int, loss: float, size: int
) -> None:
    sender, peer = lossy_exchange(seed, loss, size)
    if sender.failed:  # given up: nothing more to send, the connection closes
        assert sender.next_timeout() is None and sender.on_timeout(1e9) == []
    else:
        assert peer.messages == expected_messages()
        assert not sender.waiting


@pytest.mark.parametrize("size", [200, 1200])
def test_ten_percent_loss_never_fails(size: int) -> None:
    for seed in range(100):
        sender, peer = lossy_exchange(seed, 0.1, size)
        assert not sender.failed and peer.messages == expected_messages()


def test_misuse() -> None:
    sender = server()
    with pytest.raises(LocalProtocolError):
        sender.send([], now=0.0)
    with pytest.raises(LocalProtocolError):
        sender.send([FlightMessage(2, 1, b"\x02\x00\x00")], now=0.0)
    with pytest.raises(LocalProtocolError):
        sender.send([FlightMessage(3, 1, tls_message(4, b"ticket"))], now=0.0)  # no epoch 3 keys
    with pytest.raises(LocalProtocolError):
        FlightSender(DtlsRecordLayer(), initial_timeout=0.0)
