"""The PROXY protocol parser (``transports/proxy_protocol.py``), sans-I/O: versions 1 and 2 as
HAProxy's doc/proxy-protocol.txt specifies them, every malformed case refused (and as early as a
byte shows it), each valid header fed whole, byte by byte and with the TLS bytes that follow,
every strict prefix waiting for more, the limits at their edges, and random bytes and mutations
that raise nothing but ProxyProtocolError.  Then what the socket loops share: the balancers'
networks, the client's address as kept, the admission by source, the report and the stat line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateless13 import LocalProtocolError
from stateless13.transports.common import (
    Admission,
    Arrival,
    ConnectionReport,
    Limits,
    ProxyHeaderReader,
    Reporter,
    ServerStats,
)
from stateless13.transports.proxy_protocol import (
    MAX_HEADER,
    PROXY_V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderParser,
    ProxyProtocolError,
    crc32c,
    parse_networks,
    parse_proxy_header,
    proxy_v2_header,
    trusted,
)

CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # what follows a header


def v2(command: int, family: int, body: bytes, length: int | None = None) -> bytes:
    """A version 2 header by hand: the signature, version/command, family, length, body."""
    size = len(body) if length is None else length
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", command, family, size) + body


def tcp4_body(tlvs: bytes = b"") -> bytes:
    return bytes([192, 0, 2, 1, 198, 51, 100, 2]) + struct.pack("!HH", 56324, 443) + tlvs


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def with_crc32c(header_without: bytes) -> bytes:
    """``header_without`` (a v2 header whose last TLV is a zeroed CRC32C) with its checksum."""
    return header_without[:-4] + crc32c(header_without).to_bytes(4, "big")


def feed_bytewise(data: bytes) -> tuple[ProxyHeader | None, int]:
    """Feed ``data`` a byte at a time: the header and how many bytes it took, or (None, bytes
    fed) if it never completed.  A ProxyProtocolError passes, with the index that raised it
    in ``.position``."""
    parser = ProxyHeaderParser()
    for index in range(len(data)):
        try:
            header = parser.feed(data[index : index + 1])
        except ProxyProtocolError as error:
            error.position = index  # type: ignore[attr-defined]
            raise
        if header is not None:
            return header, index + 1
    return None, len(data)


# --- Version 1 ------------------------------------------------------------------------------

V1_VALID = [
    # The specification's example (2.1).
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(1, "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443), 47),
    ),
    # The longest TCP6 line (104 bytes), upper case accepted, written back canonical.
    (
        b"PROXY TCP6 " + b"FFFF:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
        ProxyHeader(1, "TCP6", ("ffff:" * 7 + "ffff", 65535), ("ffff:" * 7 + "ffff", 65535), 104),
    ),
    (
        b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.9 0 443\r\n",
        ProxyHeader(1, "TCP6", ("2001:db8::1", 0), ("::ffff:c000:209", 443), 47),
    ),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n", None),  # the extremes (checked below)
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "UNKNOWN", None, None, 15)),
    # The worst case of the specification: 107 bytes, the rest of an UNKNOWN line ignored.
    (
        b"PROXY UNKNOWN " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
        ProxyHeader(1, "UNKNOWN", None, None, 107),
    ),
    (b"PROXY UNKNOWN \x00\xff anything\r\n", ProxyHeader(1, "UNKNOWN", None, None, 27)),
]


@pytest.mark.parametrize("line, expected", V1_VALID)
def test_v1_valid_whole_bytewise_and_with_what_follows(
    line: bytes, expected: ProxyHeader | None
) -> None:
    header = parse_proxy_header(line)
    assert header is not None and header.version == 1 and header.length == len(line)
    if expected is not None:
        assert header == expected
    # Whole, with the TLS bytes after it: those are the rest.
    parser = ProxyHeaderParser()
    assert parser.feed(line + CLIENT_HELLO_START) == header
    assert parser.rest == CLIENT_HELLO_START
    # A byte at a time: nothing until its last byte.
    assert feed_bytewise(line + CLIENT_HELLO_START) == (header, len(line))
    # Every strict prefix is the start of one: wait for more.
    for cut in range(len(line)):
        assert parse_proxy_header(line[:cut]) is None, cut


def test_v1_extremes() -> None:
    header = parse_proxy_header(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n")
    assert header is not None
    assert header.source == ("0.0.0.0", 0) and header.destination == ("255.255.255.255", 0)


GOOD_V1 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443"

V1_MALFORMED = {
    "lone LF": GOOD_V1 + b"\n",
    "LF before CR": GOOD_V1 + b"\n\r\n",
    "lone CR": GOOD_V1 + b"\rX",
    "two spaces after PROXY": b"PROXY  TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "two spaces between addresses": b"PROXY TCP4 192.168.0.1  192.168.0.11 56324 443\r\n",
    "trailing space": GOOD_V1 + b" \r\n",
    "a tab": b"PROXY TCP4\t192.168.0.1 192.168.0.11 56324 443\r\n",
    "unknown protocol": b"PROXY TCP5 192.168.0.1 192.168.0.11 56324 443\r\n",
    "lower case protocol": b"PROXY tcp4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "UDP4": b"PROXY UDP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "UNKNOWN glued": b"PROXY UNKNOWNX\r\n",
    "a field missing": b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",
    "a field more": GOOD_V1 + b" 1\r\n",
    "no fields": b"PROXY \r\n",
    "IPv4 leading zero": b"PROXY TCP4 192.168.01.1 192.168.0.11 56324 443\r\n",
    "IPv4 out of range": b"PROXY TCP4 256.1.1.1 192.168.0.11 56324 443\r\n",
    "IPv4 three parts": b"PROXY TCP4 192.168.1 192.168.0.11 56324 443\r\n",
    "IPv4 hex": b"PROXY TCP4 0xc0.168.0.1 192.168.0.11 56324 443\r\n",
    "IPv6 under TCP4": b"PROXY TCP4 ::1 192.168.0.11 56324 443\r\n",
    "IPv4 under TCP6": b"PROXY TCP6 192.168.0.1 ::1 56324 443\r\n",
    "IPv6 zone": b"PROXY TCP6 fe80::1%eth0 ::1 56324 443\r\n",
    "IPv6 too many groups": b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 56324 443\r\n",
    "a host name": b"PROXY TCP4 localhost 192.168.0.11 56324 443\r\n",
    "port leading zero": b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",
    "port 65536": b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",
    "port negative": b"PROXY TCP4 192.168.0.1 192.168.0.11 -1 443\r\n",
    "port plus": b"PROXY TCP4 192.168.0.1 192.168.0.11 +1 443\r\n",
    "port non-ASCII digit": b"PROXY TCP4 192.168.0.1 192.168.0.11 \xd9\xa1 443\r\n",
    "address non-ASCII": b"PROXY TCP4 192.168.0.\xd9\xa1 192.168.0.11 1 443\r\n",
    "port too long": b"PROXY TCP4 192.168.0.1 192.168.0.11 000000000001 443\r\n",
    "no CRLF in 107 bytes": b"PROXY UNKNOWN " + b"a" * 100,
    "CRLF at 107-108": b"PROXY UNKNOWN " + b"a" * 92 + b"\r\n",
    "lower case PROXY": b"proxy TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    "PROXY without a space": b"PROXY\r\n",
}


@pytest.mark.parametrize("name", V1_MALFORMED)
def test_v1_malformed_is_refused_whole_and_bytewise(name: str) -> None:
    data = V1_MALFORMED[name]
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)
    with pytest.raises(ProxyProtocolError):
        feed_bytewise(data)


def test_v1_is_refused_at_the_byte_that_shows_it() -> None:
    def position(data: bytes) -> int:
        with pytest.raises(ProxyProtocolError) as caught:
            feed_bytewise(data)
        return int(caught.value.position)  # type: ignore[attr-defined]

    assert position(b"GET / HTTP/1.1\r\n") == 0
    assert position(b"PROXX") == 4
    assert position(b"PROXY\r\n") == 5
    assert position(GOOD_V1 + b"\n") == len(GOOD_V1)  # the LF, not later
    assert position(GOOD_V1 + b"\rX") == len(GOOD_V1) + 1
    # Never a byte past the 107th waited for.
    assert position(b"PROXY UNKNOWN " + b"a" * 200) == 106


def test_a_tls_client_hello_is_named_as_such() -> None:
    with pytest.raises(ProxyProtocolError, match="a TLS record where the PROXY header"):
        parse_proxy_header(CLIENT_HELLO_START)


# --- Version 2 ------------------------------------------------------------------------------

AWS_VPCE = tlv(0xEA, b"\x01vpce-08d2bf15fac5001c9")  # PP2_TYPE_AWS, PP2_SUBTYPE_AWS_VPCE_ID

V2_VALID = [
    # Our own encoder: TCP4, no TLV (tests/peers/test_proxy.py checks its bytes).
    (
        proxy_v2_header(("192.0.2.1", 56324), ("198.51.100.2", 443)),
        ProxyHeader(2, "TCP4", ("192.0.2.1", 56324), ("198.51.100.2", 443), 28),
    ),
    # TCP6 with the ALPN and authority TLVs.
    (
        proxy_v2_header(("2001:db8::1", 1), ("2001:db8::2", 2), alpn="h2", authority="a.b"),
        ProxyHeader(
            2, "TCP6", ("2001:db8::1", 1), ("2001:db8::2", 2), 63, ((1, b"h2"), (2, b"a.b"))
        ),
    ),
    # As AWS NLB sends it: TCP4 and its VPC endpoint TLV.
    (
        v2(0x21, 0x11, tcp4_body(AWS_VPCE)),
        ProxyHeader(
            2,
            "TCP4",
            ("192.0.2.1", 56324),
            ("198.51.100.2", 443),
            28 + len(AWS_VPCE),
            ((0xEA, AWS_VPCE[3:]),),
        ),
    ),
    # NOOP padding, a custom TLV, an empty TLV, a valid CRC32C (2.2.3-2.2.8).
    (
        with_crc32c(
            v2(
                0x21,
                0x11,
                tcp4_body(
                    tlv(0x04, b"\x00" * 5) + tlv(0xE0, b"x") + tlv(0xF0, b"") + tlv(3, bytes(4))
                ),
            )
        ),
        None,
    ),
    # LOCAL (a health check): the family and any address block are ignored.
    (v2(0x20, 0x00, b""), ProxyHeader(2, "LOCAL", None, None, 16)),
    (v2(0x20, 0xFF, b"\x01" * 7), ProxyHeader(2, "LOCAL", None, None, 23)),
    # PROXY over UNSPEC: no client named; what follows is not read.
    (v2(0x21, 0x00, b""), ProxyHeader(2, "UNSPEC", None, None, 16)),
    (v2(0x21, 0x00, b"\x01\x02\x03"), ProxyHeader(2, "UNSPEC", None, None, 19)),
    # The other assigned pairs fall back to UNSPEC (2.2: a receiver that does not use them).
    (v2(0x21, 0x12, tcp4_body()), ProxyHeader(2, "UDP4", None, None, 28)),
    (v2(0x21, 0x22, bytes(36)), ProxyHeader(2, "UDP6", None, None, 52)),
    (v2(0x21, 0x31, bytes(216)), ProxyHeader(2, "UNIX_STREAM", None, None, 232)),
    (v2(0x21, 0x32, bytes(216)), ProxyHeader(2, "UNIX_DGRAM", None, None, 232)),
    # The longest accepted: MAX_HEADER bytes in all.
    (v2(0x21, 0x11, tcp4_body(tlv(0x04, bytes(MAX_HEADER - 28 - 3)))), None),
]


@pytest.mark.parametrize("header_bytes, expected", V2_VALID)
def test_v2_valid_whole_bytewise_and_with_what_follows(
    header_bytes: bytes, expected: ProxyHeader | None
) -> None:
    header = parse_proxy_header(header_bytes)
    assert header is not None and header.version == 2 and header.length == len(header_bytes)
    if expected is not None:
        assert header == expected
    parser = ProxyHeaderParser()
    assert parser.feed(header_bytes + CLIENT_HELLO_START) == header
    assert parser.rest == CLIENT_HELLO_START
    assert feed_bytewise(header_bytes + CLIENT_HELLO_START) == (header, len(header_bytes))
    for cut in range(len(header_bytes)):
        assert parse_proxy_header(header_bytes[:cut]) is None, cut


def test_v2_tlvs_are_kept_in_order() -> None:
    data = with_crc32c(v2(0x21, 0x11, tcp4_body(tlv(0x04, b"\x00" * 5) + tlv(3, bytes(4)))))
    header = parse_proxy_header(data)
    assert header is not None
    assert [kind for kind, _ in header.tlvs] == [0x04, 0x03]


V2_MALFORMED = {
    # name: (bytes, the index of the byte that shows it)
    "signature off": (b"\r\n\r\n\x00\r\nQUIX" + bytes(20), 10),
    "version 1": (v2(0x11, 0x11, tcp4_body()), 12),
    "version 3": (v2(0x31, 0x11, tcp4_body()), 12),
    "command 2": (v2(0x22, 0x11, tcp4_body()), 12),
    "command 15": (v2(0x2F, 0x11, tcp4_body()), 12),
    "family 0x13": (v2(0x21, 0x13, tcp4_body()), 13),
    "family 0x10": (v2(0x21, 0x10, tcp4_body()), 13),
    "family 0x41": (v2(0x21, 0x41, tcp4_body()), 13),
    "family 0x01": (v2(0x21, 0x01, b""), 13),
    "TCP4 too short": (v2(0x21, 0x11, tcp4_body()[:11]), 15),
    "TCP6 too short": (v2(0x21, 0x21, bytes(35)), 15),
    "UNIX too short": (v2(0x21, 0x31, bytes(215)), 15),
    "over the maximum": (v2(0x21, 0x11, tcp4_body(), length=MAX_HEADER - 15), 15),
    "length 65535": (v2(0x21, 0x11, tcp4_body(), length=0xFFFF), 15),
    # Seen once the whole header is in: its last byte.
    "TLV overruns": (v2(0x21, 0x11, tcp4_body(b"\x04\x00\x05abc")), 33),
    "TLV overruns by one": (v2(0x21, 0x11, tcp4_body(b"\x04\x00\x03ab")), 32),
    "one stray byte": (v2(0x21, 0x11, tcp4_body(b"\x04")), 28),
    "two stray bytes": (v2(0x21, 0x11, tcp4_body(tlv(4, b"") + b"\x04\x00")), 32),
    "CRC32C wrong": (v2(0x21, 0x11, tcp4_body(tlv(3, b"\x00\x00\x00\x01"))), 34),
    "CRC32C of 3 bytes": (v2(0x21, 0x11, tcp4_body(tlv(3, b"\x00\x00\x00"))), 33),
}


@pytest.mark.parametrize("name", V2_MALFORMED)
def test_v2_malformed_is_refused_at_the_byte_that_shows_it(name: str) -> None:
    data, position = V2_MALFORMED[name]
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)
    with pytest.raises(ProxyProtocolError) as caught:
        feed_bytewise(data + CLIENT_HELLO_START)
    assert caught.value.position == position  # type: ignore[attr-defined]


def test_a_crc32c_flip_anywhere_is_caught() -> None:
    good = with_crc32c(v2(0x21, 0x11, tcp4_body(tlv(0xE0, b"id") + tlv(3, bytes(4)))))
    assert parse_proxy_header(good) is not None
    # Past the signature and the length, which are checked on their own; and but for the CRC
    # TLV's own type byte (flipped, it is another TLV: there is no checksum any more).
    for index in set(range(16, len(good))) - {len(good) - 7}:
        flipped = good[:index] + bytes([good[index] ^ 0x01]) + good[index + 1 :]
        with pytest.raises(ProxyProtocolError):
            parse_proxy_header(flipped)


def test_crc32c_known_values() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC catalogue's check value
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4


# --- The parser object -----------------------------------------------------------------------


def test_after_an_error_every_feed_raises_it_again() -> None:
    parser = ProxyHeaderParser()
    with pytest.raises(ProxyProtocolError) as first:
        parser.feed(b"GET")
    with pytest.raises(ProxyProtocolError) as again:
        parser.feed(b"PROXY UNKNOWN\r\n")
    assert again.value is first.value


def test_after_the_header_the_parser_takes_nothing_more() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN\r\n") is not None
    with pytest.raises(LocalProtocolError):
        parser.feed(b"more")


def test_nothing_is_waited_for_past_the_maximum() -> None:
    with pytest.raises(ProxyProtocolError, match="a 301-byte header, over the 300 accepted"):
        ProxyHeaderParser(max_header=300).feed(v2(0x21, 0x11, tcp4_body(), length=285))
    at_most = v2(0x21, 0x11, tcp4_body(tlv(0x04, bytes(300 - 28 - 3))))
    header = ProxyHeaderParser(max_header=300).feed(at_most)
    assert header is not None and header.length == 300
    for size in (231, 0xFFFF + 17):
        with pytest.raises(LocalProtocolError):
            ProxyHeaderParser(max_header=size)


def test_the_parser_buffers_at_most_one_header() -> None:
    """A header and the client's first flight in one read: the parser returns the rest whole,
    and holds nothing after."""
    parser = ProxyHeaderParser()
    flight = b"\x16" * 65536
    assert parser.feed(b"PROXY UNKNOWN\r\n" + flight) is not None
    assert parser.rest == flight
    assert len(parser._buffer) == 0


# --- Random input: nothing but ProxyProtocolError escapes -------------------------------------

VALID = [data for data, _ in V1_VALID] + [data for data, _ in V2_VALID[:-1]]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_proxy_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProxyProtocolError):
        parse_proxy_header(data)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(1, 7),
)
def test_mutated_headers_raise_only_proxy_protocol_error(
    header: bytes, mutations: list[tuple[int, int]], step: int
) -> None:
    data = bytearray(header)
    for position, value in mutations:
        data[position % len(data)] = value
    parser = ProxyHeaderParser()
    try:
        for start in range(0, len(data), step):
            result = parser.feed(bytes(data[start : start + step]))
            if result is not None:
                assert result.length <= len(data)
                break
    except ProxyProtocolError:
        pass


# --- What the socket loops share --------------------------------------------------------------


def test_parse_networks() -> None:
    assert parse_networks("10.0.0.0/8, 2001:db8::/32,192.0.2.7") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    assert parse_networks(["127.0.0.1", "::1"]) == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    for bad in ("10.0.0.1/8", "", " , ", "balancer.example", "10.0.0.0/33"):
        with pytest.raises(ValueError):
            parse_networks(bad)


def test_trusted_balancers() -> None:
    networks = parse_networks("10.0.0.0/8,2001:db8::/32")
    assert trusted(("10.1.2.3", 1), networks)
    assert trusted(("::ffff:10.1.2.3", 1), networks)  # from a dual-stack socket
    assert trusted(("2001:db8::5%eth0", 1), networks)
    assert not trusted(("11.0.0.1", 1), networks)
    assert not trusted(("2001:db9::5", 1), networks)
    assert not trusted(("10.1.2.3", 1), ())


def test_limits_take_networks_only() -> None:
    assert Limits().proxy_protocol_from == ()
    Limits(proxy_protocol_from=parse_networks("10.0.0.0/8"))
    for bad in (("10.0.0.0/8",), "10.0.0.0/8", [ipaddress.ip_network("10.0.0.0/8")]):
        with pytest.raises(LocalProtocolError, match="proxy_protocol_from"):
            Limits(proxy_protocol_from=bad)  # type: ignore[arg-type]


def test_the_client_named_is_the_peer_and_a_health_check_is_the_balancer() -> None:
    balancer = ("10.0.0.2", 40000)
    reader = ProxyHeaderReader(balancer)
    assert not reader.receive(b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:198.51.100.2 5")
    assert reader.receive(b" 443\r\n" + CLIENT_HELLO_START)
    assert reader.error is None and reader.rest == CLIENT_HELLO_START
    # An IPv4-mapped address is the IPv4 address it is, as a direct connection's would be.
    assert reader.arrival == Arrival(("192.0.2.1", 5), balancer, ("198.51.100.2", 443))
    for health_check in (b"PROXY UNKNOWN\r\n", v2(0x20, 0x00, b""), v2(0x21, 0x00, b"")):
        reader = ProxyHeaderReader(balancer)
        assert reader.receive(health_check) and reader.error is None
        assert reader.arrival == Arrival(balancer)


def test_the_reader_says_why_it_failed() -> None:
    reader = ProxyHeaderReader(("10.0.0.2", 1))
    assert reader.receive(CLIENT_HELLO_START)
    assert reader.error is not None and reader.error.startswith("proxy_protocol: a TLS record")
    reader = ProxyHeaderReader(("10.0.0.2", 1))
    assert not reader.receive(b"PROXY ")
    assert reader.receive(b"")
    assert reader.error == "client closed before its PROXY protocol header"
    reader.timed_out(10)
    assert reader.error.startswith("handshake_timeout (10s)")
    for error, outcome in (
        ("proxy_protocol: v2: version 1, not 2", "proxy_protocol"),
        ("client closed before its PROXY protocol header", "client_left"),
        ("handshake_timeout (10s): no complete PROXY protocol header", "handshake_timeout"),
    ):
        assert ConnectionReport.before_tls(("10.0.0.2", 1), 0.0, error).outcome == outcome


def test_admission_counts_a_balancer_by_the_clients_it_names() -> None:
    limits = Limits(max_handshakes_per_source=2, proxy_protocol_from=parse_networks("10.0.0.2"))
    admission = Admission(limits, 100)
    assert admission.from_balancer(("10.0.0.2", 1))
    assert not admission.from_balancer(("192.0.2.1", 1))
    # The balancer's connections are not counted by its own address at accept...
    for _ in range(5):
        assert admission.admit(None) is None
    assert admission.handshaking == 5
    # ...but by the clients their headers name.
    client = admission.source(("192.0.2.1", 1))
    assert admission.admit_source(client) is None
    assert admission.admit_source(client) is None
    assert admission.admit_source(client) == "max_handshakes_per_source"
    assert admission.admit_source(admission.source(("192.0.2.2", 1))) is None
    # A direct connection from that client shares its count.
    assert admission.admit(client) == "max_handshakes_per_source"
    admission.handshake_over(None)  # the refused one
    admission.handshake_over(client)
    assert admission.admit_source(client) is None
    # The whole server's limits still count the balancer's connections at accept.
    small = Admission(Limits(max_concurrent_handshakes=2), 100)
    assert small.admit(None) is None and small.admit(None) is None
    assert small.admit(None) == "max_concurrent_handshakes"


def test_reports_say_via_and_bad_headers_are_counted_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    balancer, client = ("10.0.0.2", 40000), ("192.0.2.1", 5)
    timeout = "handshake_timeout (10s)"
    report = ConnectionReport(client, True, False, None, 0.1, timeout, via=balancer)
    assert report.log_line().startswith("peer=192.0.2.1:5 via=10.0.0.2:40000 hrr=yes")
    assert report.fields()["via"] == "10.0.0.2:40000"
    direct = ConnectionReport(client, True, False, None, 0.1, timeout)
    assert "via=" not in direct.log_line() and direct.fields()["via"] is None
    refused = ConnectionReport.refused(client, "max_handshakes_per_source", balancer)
    assert refused.via == balancer and refused.outcome == "refused_max_handshakes_per_source"

    reporter = Reporter(None, proxy_protocol=True)
    with caplog.at_level(logging.INFO):
        reporter(report)
        for _ in range(50):
            reporter(ConnectionReport.before_tls(balancer, 0.0, "proxy_protocol: v1: lone LF"))
    lines = [r.getMessage() for r in caplog.records if r.name == "stateless13.server"]
    assert len(lines) == 2, lines  # the client's line, one warning for the 50 bad headers
    assert lines[1].startswith("bad PROXY protocol headers from balancers (1 times)")
    assert "10.0.0.2:40000: proxy_protocol: v1: lone LF" in lines[1]
    snapshot = reporter.stats.snapshot(in_progress=0, open=0, validating=1)
    assert snapshot["proxied"] == 1 and snapshot["failed"] == {
        "handshake_timeout": 1,
        "proxy_protocol": 50,
    }
    assert "left_after_hrr=0 proxied=1 refused=0" in ServerStats.line(snapshot)
    # Off: the stat line is as it was.
    assert "proxied" not in Reporter(None).stats.snapshot()
