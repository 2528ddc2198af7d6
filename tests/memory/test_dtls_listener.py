"""The stateless DTLS 1.3 listener and the memory server, datagram by datagram.

ClientHello1s are wolfSSL's (tests/data/dtls); ClientHello2 is made from one and our HRR as a
client makes it (tests/dtls_messages.py).  Proven here: the listener keeps nothing per client
(tracemalloc, object counts and resident memory over 110,000 spoofed ClientHellos), never
answers with more bytes than the ClientHello brought, reassembles a ClientHello split across
datagrams in a bounded table, and drops what has no business reaching it; an association it
makes retransmits its flight on the timer and ends at the handshake deadline, with a report.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import tracemalloc

import pytest

from stateless13 import Credential, ServerConfig
from stateless13.dtls_flight import encode_ack
from stateless13.dtls_listener import (
    DtlsAccept,
    DtlsDrop,
    DtlsHeld,
    DtlsListener,
    DtlsListenerLimits,
    DtlsReply,
)
from stateless13.messages import (
    ExtensionType,
    pull_client_hello,
    pull_server_hello,
    push_client_hello,
)
from stateless13.transports.common import ConnectionReport
from stateless13.transports.dtls_memory import DtlsMemoryServer, DtlsOptions
from tests.dtls_messages import (
    client_hello_2,
    datagrams_of,
    plaintext_record,
    wolfssl_client_hello,
)

CONFIG = ServerConfig(credentials=(Credential.self_signed("localhost"),))
PEER = ("192.0.2.10", 50123)
NOW = 1_800_000_000.0


def hrr_message(reply: DtlsReply) -> bytes:
    """The HRR as a TLS-format message, out of its DTLSPlaintext record and DTLS header."""
    datagram = reply.datagram
    assert datagram[0] == 22 and datagram[1:3] == b"\xfe\xfd"
    fragment = datagram[13:]
    assert fragment[0] == 2 and fragment[4:6] == b"\x00\x00"  # server_hello, message_seq 0
    return fragment[:4] + fragment[12:]


@pytest.mark.parametrize("name", ["x25519", "none", "secp384r1"])
def test_client_hello_1_gets_an_hrr_no_larger_and_nothing_is_kept(name: str) -> None:
    listener = DtlsListener(CONFIG)
    message, size = wolfssl_client_hello(name)
    (datagram,) = datagrams_of(message)
    assert len(datagram) == size
    reply = listener.receive(datagram, PEER, NOW)
    assert isinstance(reply, DtlsReply) and reply.error is None
    assert len(reply.datagram) <= size
    assert pull_server_hello(hrr_message(reply)[4:]).is_hello_retry_request
    assert len(listener.table) == 0
    assert listener.stats.hello_retries == 1 and listener.stats.largest_ratio <= 1


def test_the_hrr_repeats_the_client_record_number() -> None:
    message, _ = wolfssl_client_hello("none")
    datagram = plaintext_record(datagrams_of(message)[0][13:], seq=7)
    reply = DtlsListener(CONFIG).receive(datagram, PEER, NOW)
    assert isinstance(reply, DtlsReply) and reply.datagram[5:11] == (7).to_bytes(6, "big")


def test_a_client_hello_split_across_datagrams_is_reassembled_then_forgotten() -> None:
    listener = DtlsListener(CONFIG)
    message, _ = wolfssl_client_hello("secp384r1")
    parts = datagrams_of(message, fragment_size=100)
    assert len(parts) == 3
    # Out of order, one duplicated: still one HRR, sized against every datagram it took.
    assert isinstance(listener.receive(parts[2], PEER, NOW), DtlsHeld)
    assert isinstance(listener.receive(parts[0], PEER, NOW), DtlsHeld)
    assert isinstance(listener.receive(parts[0], PEER, NOW), DtlsHeld)
    assert len(listener.table) == 1
    reply = listener.receive(parts[1], PEER, NOW)
    assert isinstance(reply, DtlsReply) and reply.error is None
    assert len(reply.datagram) <= sum(map(len, parts))
    assert len(listener.table) == 0 and listener.table.bytes == 0


def test_partial_client_hellos_are_bounded_by_entries_bytes_and_age() -> None:
    limits = DtlsListenerLimits(partial_hellos=64, partial_hello_bytes=8192)
    listener = DtlsListener(CONFIG, limits)
    message, _ = wolfssl_client_hello("secp384r1")
    first = datagrams_of(message, fragment_size=100)[0]
    for number in range(5000):  # spoofed senders that never send the rest
        peer = (f"10.0.{number >> 8}.{number & 255}", 1024 + number)
        assert isinstance(listener.receive(first, peer, NOW), DtlsHeld)
        assert len(listener.table) <= 64 and listener.table.bytes <= 8192
    assert listener.table.evictions >= 5000 - 64
    # Expired after partial_hello_lifetime: the next arrival finds a fresh start.
    later = NOW + limits.partial_hello_lifetime + 1
    assert isinstance(listener.receive(first, ("10.1.0.1", 9), later), DtlsHeld)
    assert len(listener.table) == 1


def test_a_partial_client_hello_over_its_datagram_limit_is_dropped() -> None:
    listener = DtlsListener(CONFIG, DtlsListenerLimits(partial_hello_datagrams=2))
    message, _ = wolfssl_client_hello("secp384r1")
    first = datagrams_of(message, fragment_size=100)[0]
    assert isinstance(listener.receive(first, PEER, NOW), DtlsHeld)
    dropped = listener.receive(first, PEER, NOW)
    assert isinstance(dropped, DtlsDrop) and "datagram limit" in dropped.reason
    assert len(listener.table) == 0


def test_an_hrr_larger_than_its_client_hello_is_not_sent() -> None:
    """wolfSSL's smallest ClientHello (177 bytes) gets a 172-byte HRR; the same with one cipher
    suite instead of 19 is 141 bytes, smaller than any HRR with a cookie: dropped, unanswered."""
    message, _ = wolfssl_client_hello("none")
    hello = pull_client_hello(message[4:], dtls=True)
    small = push_client_hello(dataclasses.replace(hello, cipher_suites=(0x1301,)))
    (datagram,) = datagrams_of(small)
    assert len(datagram) == 141
    listener = DtlsListener(CONFIG)
    dropped = listener.receive(datagram, PEER, NOW)
    assert isinstance(dropped, DtlsDrop) and "anti-amplification" in dropped.reason
    assert listener.stats.bytes_answered == 0


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (b"", "no ClientHello"),
        (b"\x17\xfe\xfd" + bytes(10), "no ClientHello"),  # 23 is never plaintext (§4.1)
        (bytes((0x2C, 0, 1, 0, 20)) + bytes(20), "protected record"),
        (plaintext_record(b"\x02\x00", content_type=21), "alert"),
        (plaintext_record(b"\x00\x00", content_type=26), "ack record"),
        (plaintext_record(bytes(5)), "malformed handshake record"),
    ],
)
def test_what_is_no_client_hello_is_dropped_unanswered(datagram: bytes, reason: str) -> None:
    listener = DtlsListener(CONFIG)
    result = listener.receive(datagram, PEER, NOW)
    assert isinstance(result, DtlsDrop) and reason in result.reason
    assert len(listener.table) == 0


def test_a_forged_cookie_gets_illegal_parameter_and_nothing_else() -> None:
    listener = DtlsListener(CONFIG)
    message, _ = wolfssl_client_hello("none")
    reply = listener.receive(datagrams_of(message)[0], PEER, NOW)
    assert isinstance(reply, DtlsReply)
    ch2, _ = client_hello_2(message, hrr_message(reply))
    (datagram,) = datagrams_of(ch2, message_seq=1)
    for peer in [(PEER[0], PEER[1] + 1), ("192.0.2.11", PEER[1])]:  # another port, another IP
        refused = listener.receive(datagram, peer, NOW)
        assert isinstance(refused, DtlsReply) and refused.error is not None
        assert refused.error.description == 47  # illegal_parameter, RFC 9147 §5.1
        assert refused.datagram[0] == 21 and refused.datagram[-2:] == b"\x02\x2f"
    accepted = listener.receive(datagram, PEER, NOW + 1)
    assert isinstance(accepted, DtlsAccept)


def test_spoofed_client_hellos_retain_nothing() -> None:
    """Measured twice: tracemalloc over 10,000 ClientHellos from as many addresses (nothing
    retained), then 100,000 more without it (tracemalloc slows them tenfold): no object left
    and the process's resident memory flat."""
    listener = DtlsListener(CONFIG)
    hellos = [datagrams_of(wolfssl_client_hello(n)[0])[0] for n in ("x25519", "none", "secp384r1")]
    for hello in hellos:  # warm every cache first
        assert isinstance(listener.receive(hello, PEER, NOW), DtlsReply)

    def flood(count: int, base: int) -> None:
        for number in range(base, base + count):
            peer = (f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", number & 0xFFFF)
            assert isinstance(listener.receive(hellos[number % 3], peer, NOW), DtlsReply)

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        flood(10_000, 0)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 16_384, f"{grown} bytes retained after 10,000 ClientHellos"

    gc.collect()
    objects_before = len(gc.get_objects())
    resident_before = resident_bytes()
    started = time.perf_counter()
    flood(100_000, 10_000)
    elapsed = time.perf_counter() - started
    gc.collect()
    assert len(gc.get_objects()) - objects_before < 100
    # One 64-byte object per client would be 6.4 MB; the allocator's noise is far below 2 MB.
    assert resident_bytes() - resident_before < 2 << 20
    assert listener.stats.hello_retries == 110_003 and listener.stats.largest_ratio <= 1
    print(f"100,000 spoofed ClientHellos answered in {elapsed:.2f} s")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def start_association(server: DtlsMemoryServer, now: float) -> list[bytes]:
    message, _ = wolfssl_client_hello("none")
    server.receive(datagrams_of(message)[0], PEER, now)
    ((hrr, _),) = server.datagrams_to_send()
    ch2, _ = client_hello_2(message, hrr_message(DtlsReply(hrr)))
    (datagram,) = datagrams_of(ch2, message_seq=1)
    server.receive(datagram, PEER, now)
    flight = [d for d, peer in server.datagrams_to_send() if peer == PEER]
    assert server.connections == 1 and flight
    return flight


def test_an_association_retransmits_its_flight_then_meets_its_handshake_deadline() -> None:
    reports: list[ConnectionReport] = []
    server = DtlsMemoryServer(
        CONFIG, options=DtlsOptions(handshake_timeout=5.0), on_report=reports.append
    )
    flight = start_association(server, NOW)
    server_hello = flight[0][13:]
    assert server_hello[0] == 2  # ServerHello, message_seq 1 (our HRR was 0)
    assert server_hello[4:6] == b"\x00\x01"
    length = int.from_bytes(server_hello[9:12], "big")
    hello = pull_server_hello(server_hello[12 : 12 + length])
    assert dict(hello.extensions)[ExtensionType.supported_versions] == b"\xfe\xfc"
    # §5.8.2: the timer starts at 1 s and doubles; each retransmission uses new record numbers.
    assert server.next_timer() == pytest.approx(NOW + 1)
    server.handle_timers(NOW + 1)
    again = [d for d, _ in server.datagrams_to_send()]
    assert len(again) == len(flight) and again != flight
    assert server.next_timer() == pytest.approx(NOW + 3)
    server.handle_timers(NOW + 3)
    assert server.datagrams_to_send()
    # Forged epoch-2 records are dropped and counted, never answered.
    server.receive(bytes((0x2A, 0, 1, 0, 20)) + bytes(20), PEER, NOW + 3.5)
    assert server.datagrams_to_send() == []
    server.handle_timers(NOW + 5)
    assert server.connections == 0
    (report,) = reports
    assert report.error == "handshake timeout" and report.transport == "dtls"
    assert report.retransmissions == 2 and report.hello_retry and report.cookie_verified


def test_the_association_limit_drops_client_hello_2() -> None:
    server = DtlsMemoryServer(CONFIG, options=DtlsOptions(max_connections=1))
    start_association(server, NOW)
    message, _ = wolfssl_client_hello("none")
    other = ("192.0.2.99", 4000)
    server.receive(datagrams_of(message)[0], other, NOW)
    ((hrr, _),) = server.datagrams_to_send()
    ch2, _ = client_hello_2(message, hrr_message(DtlsReply(hrr)))
    assert server.receive(datagrams_of(ch2, message_seq=1)[0], other, NOW) == []
    assert server.connections == 1 and server.refused == 1
    assert server.datagrams_to_send() == []


def test_a_client_starting_again_from_the_same_address_replaces_its_association() -> None:
    """RFC 9147 §5.11: the old association goes only once the new ClientHello2's cookie verified;
    the old client's own ClientHello2, resent, still reaches its association (which resends its
    flight, §5.8.1)."""
    reports: list[ConnectionReport] = []
    server = DtlsMemoryServer(CONFIG, on_report=reports.append)
    start_association(server, NOW)
    first = server.connection(PEER)
    assert first is not None
    message, _ = wolfssl_client_hello("none")
    server.receive(datagrams_of(message)[0], PEER, NOW + 0.1)  # the same client: a late CH1
    assert server.connection(PEER) is first
    # A new client on that address (another random): a stateless HRR, the old one untouched.
    fresh, _ = wolfssl_client_hello("secp384r1")  # its HRR names x25519, as client_hello_2 does
    server.receive(datagrams_of(fresh)[0], PEER, NOW + 0.2)
    assert server.connection(PEER) is first and not reports
    sent = server.datagrams_to_send()
    hrr = next(d for d, _ in sent if d[13] == 2 and d[17:19] == b"\x00\x00")
    ch2, _ = client_hello_2(fresh, hrr_message(DtlsReply(hrr)))
    server.receive(datagrams_of(ch2, message_seq=1)[0], PEER, NOW + 0.3)
    second = server.connection(PEER)
    assert second is not None and second is not first
    (report,) = reports
    assert report.error is not None and "RFC 9147 §5.11" in report.error


def test_a_plaintext_ack_is_ignored() -> None:
    """Anyone can forge an epoch-0 ACK naming our flight's records: it must not stop the
    retransmissions (only the client's protected ACKs, or its next flight, do)."""
    server = DtlsMemoryServer(CONFIG)
    start_association(server, NOW)
    ack = encode_ack([(0, seq) for seq in range(8)] + [(2, seq) for seq in range(8)])
    server.receive(plaintext_record(ack, content_type=26, seq=5), PEER, NOW + 0.5)
    assert server.datagrams_to_send() == []
    server.handle_timers(NOW + 1)
    assert server.datagrams_to_send(), "the forged ACK stopped the retransmission"
