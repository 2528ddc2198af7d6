"""The PROXY protocol, versions 1 and 2 (HAProxy's doc/proxy-protocol.txt): the header a TCP
balancer puts before a client's bytes to name the client, and the one our front door sends its
backend.  One module for the format, both ways.

* **Inbound** (``Limits.proxy_protocol_from``): a balancer (HAProxy's ``send-proxy`` and
  ``send-proxy-v2``, nginx's ``proxy_protocol on``, AWS NLB's proxy protocol v2) names the client
  in the first bytes of each connection; :class:`ProxyHeaderParser` reads them, sans-I/O (bytes
  in: a :class:`ProxyHeader`, None while more is needed, or :class:`ProxyProtocolError`),
  incrementally (the header may come a byte at a time) and bounded (a version 1 line within 107
  bytes, a version 2 header within ``MAX_HEADER``, rejected as soon as a byte cannot belong to
  one).  The socket loops decide whom to expect it from, and what to do with it.
* **Outbound** (``--proxy-to --proxy-protocol v2``): :func:`proxy_v2_header`.

Written here rather than taken from PyPI: the one maintained package (proxy-protocol) reads the
header from asyncio's StreamReader, so it cannot serve the blocking loop, nor be fed bytes alone;
the format is two pages of the specification.

What is accepted (section numbers are the specification's):

* version 1 (2.1): ``PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n``, exactly one space between
  fields, addresses of the family named, no leading zeros in IPv4 numbers or ports, a port in
  0-65535, the CRLF within the first 107 bytes and never a lone CR or LF; ``PROXY UNKNOWN``
  followed by anything (ignored) up to the CRLF.
* version 2 (2.2): the 12-byte signature, version 2, command LOCAL (a health check of the
  balancer's own: the family and addresses are ignored) or PROXY; for PROXY, TCP over IPv4
  (0x11) or IPv6 (0x21), or UNSPEC (0x00), and the other assigned pairs (UDP, UNIX), which fall
  back to UNSPEC as the specification requires of a receiver that does not use them; the length
  at least the address block's and 16 + length at most ``MAX_HEADER``; TLVs (2.2.1-2.2.8) after
  the TCP addresses walked and kept but not interpreted, except a CRC32C (2.2.3), checked when
  present; one that overruns the header, or stray bytes after the last, is an error.

A header that names no client (UNKNOWN, LOCAL, UNSPEC and the fallbacks) has ``source`` None:
the connection's own endpoints stand, as the specification says.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from stateless13 import LocalProtocolError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# ---------------------------------------------------------------------------------------------
# The format

PROXY_V1_PREFIX = b"PROXY "  # "PROXY" and exactly one space (2.1)
PROXY_V1_MAX = 107  # bytes of the longest line, CRLF included (2.1)
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # the 12-byte signature (2.2)
PROXY_V2_LOCAL = 0x20  # version 2 (high nibble), command LOCAL (low nibble)
PROXY_V2_PROXY = 0x21  # version 2, command PROXY
PROXY_V2_UNSPEC = 0x00  # AF_UNSPEC, UNSPEC
PROXY_V2_TCP4 = 0x11  # AF_INET (high nibble), STREAM (low nibble)
PROXY_V2_TCP6 = 0x21  # AF_INET6, STREAM
PP2_TYPE_ALPN = 0x01  # 2.2.1
PP2_TYPE_AUTHORITY = 0x02  # 2.2.2: the host name the client asked for (SNI)
PP2_TYPE_CRC32C = 0x03  # 2.2.3
#: The longest version 2 header accepted, in bytes (16 + its length field), as nginx's
#: NGX_PROXY_PROTOCOL_MAX_HEADER: room for every address block (216 bytes at most) and the
#: TLVs balancers send (AWS's VPC endpoint, HAProxy's SSL and unique ID: a few hundred bytes).
MAX_HEADER = 4096

#: The assigned family and protocol bytes (2.2): the name, the address block's length.
_V2_FAMILIES = {
    PROXY_V2_UNSPEC: ("UNSPEC", 0),
    PROXY_V2_TCP4: ("TCP4", 12),
    0x12: ("UDP4", 12),
    PROXY_V2_TCP6: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX_STREAM", 216),
    0x32: ("UNIX_DGRAM", 216),
}


class ProxyProtocolError(Exception):
    """Not a valid PROXY protocol header (the reason says why): the connection is to be closed,
    unanswered (TLS has not started: no alert)."""


@dataclass(frozen=True)
class ProxyHeader:
    """A PROXY protocol header, as read."""

    version: int  # 1 or 2
    #: What it says the connection is: ``TCP4``, ``TCP6``; ``UNKNOWN`` (version 1), ``LOCAL``,
    #: ``UNSPEC``, ``UDP4``, ``UDP6``, ``UNIX_STREAM``, ``UNIX_DGRAM`` (version 2).
    protocol: str
    #: The client's address and port (None: the connection's own endpoints stand).
    source: tuple[str, int] | None
    #: The address and port the client connected to (the balancer's, as the client saw it).
    destination: tuple[str, int] | None
    length: int  # bytes on the wire
    #: Version 2's TLVs after the TCP addresses, (type, value) as sent, in order; not interpreted.
    tlvs: tuple[tuple[int, bytes], ...] = ()


class ProxyHeaderParser:
    """One connection's PROXY header, read as its bytes come (h11's shape: bytes in, an answer
    out).

    ``feed(data)`` returns the header once it is complete, None while it is not; then ``rest``
    holds the bytes that came after it (the start of the client's own stream).  Anything that is
    not, or cannot become, a valid header raises :class:`ProxyProtocolError`, at the first byte
    that shows it, and every later ``feed`` raises it again.  At most ``max_header`` bytes are
    ever waited for.
    """

    __slots__ = ("_buffer", "_error", "header", "max_header", "rest")

    def __init__(self, max_header: int = MAX_HEADER) -> None:
        if not 16 + 216 <= max_header <= 16 + 0xFFFF:
            raise LocalProtocolError("max_header: from 232 (any address block) to 65551 bytes")
        self.max_header = max_header
        self._buffer = bytearray()
        self._error: ProxyProtocolError | None = None
        self.header: ProxyHeader | None = None
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        if self._error is not None:
            raise self._error
        if self.header is not None:
            raise LocalProtocolError("the PROXY header was read already: the rest is in .rest")
        self._buffer += data
        try:
            header = parse_proxy_header(self._buffer, self.max_header)
        except ProxyProtocolError as error:
            self._error = error
            self._buffer.clear()
            raise
        if header is not None:
            self.header, self.rest = header, bytes(self._buffer[header.length :])
            self._buffer.clear()
        return header


def parse_proxy_header(data: bytes | bytearray, max_header: int = MAX_HEADER) -> ProxyHeader | None:
    """The header at the start of ``data``; None if ``data`` is the start of one, and no more;
    ProxyProtocolError if it cannot be (the specification's detection, section 2.2, made strict:
    no byte is taken for a header's unless it fits one)."""
    start = bytes(data[: len(PROXY_V2_SIGNATURE)])
    if PROXY_V2_SIGNATURE.startswith(start):
        return _parse_v2(data, max_header) if len(data) > len(PROXY_V2_SIGNATURE) else None
    if PROXY_V1_PREFIX.startswith(start[: len(PROXY_V1_PREFIX)]):
        return _parse_v1(data)
    if start[:1] == b"\x16":
        raise ProxyProtocolError(
            "a TLS record where the PROXY header should be: does the balancer send it"
            " (nginx: proxy_protocol on; HAProxy: send-proxy)?"
        )
    raise ProxyProtocolError(f"not a PROXY protocol header: {start[:8]!r}")


# --- Version 1: the text line (2.1) ----------------------------------------------------------

_V1_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_V1_IPV6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")  # RFC 4291 text: no zone, as the spec's examples
_V1_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


def _parse_v1(data: bytes | bytearray) -> ProxyHeader | None:
    window = bytes(data[:PROXY_V1_MAX])
    cr, lf = window.find(b"\r"), window.find(b"\n")
    if lf != -1 and (cr == -1 or lf < cr):
        raise ProxyProtocolError("v1: a line feed without its carriage return")
    if cr == -1 or cr + 1 == len(window):  # no CR yet, or a CR whose LF has not come yet
        if len(window) == PROXY_V1_MAX:
            raise ProxyProtocolError(f"v1: no CRLF within {PROXY_V1_MAX} bytes")
        return None
    if window[cr + 1] != 0x0A:
        raise ProxyProtocolError("v1: a carriage return without its line feed")
    line, length = window[:cr], cr + 2
    if line == b"PROXY UNKNOWN" or line.startswith(b"PROXY UNKNOWN "):  # the rest is ignored
        return ProxyHeader(1, "UNKNOWN", None, None, length)
    fields = line.split(b" ")
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"v1: not 'PROXY TCP4|TCP6 SRC DST SPORT DPORT': {line!r}")
    protocol = fields[1].decode()
    source = _v1_address(fields[2], protocol), _v1_port(fields[4])
    destination = _v1_address(fields[3], protocol), _v1_port(fields[5])
    return ProxyHeader(1, protocol, source, destination, length)


def _v1_address(field: bytes, protocol: str) -> str:
    text = field.decode("ascii", "replace")
    pattern = _V1_IPV4 if protocol == "TCP4" else _V1_IPV6
    try:
        if not pattern.fullmatch(text):
            raise ValueError
        if protocol == "TCP4":
            return str(ipaddress.IPv4Address(text))
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise ProxyProtocolError(f"v1: {field!r} is not an address for {protocol}") from None


def _v1_port(field: bytes) -> int:
    text = field.decode("ascii", "replace")
    if not _V1_PORT.fullmatch(text) or int(text) > 0xFFFF:
        raise ProxyProtocolError(f"v1: {field!r} is not a port (0-65535, no leading zero)")
    return int(text)


# --- Version 2: the binary header (2.2) ------------------------------------------------------


def _parse_v2(data: bytes | bytearray, max_header: int) -> ProxyHeader | None:
    version_command = data[12]
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"v2: version {version_command >> 4}, not 2")
    if version_command not in (PROXY_V2_LOCAL, PROXY_V2_PROXY):
        raise ProxyProtocolError(f"v2: command {version_command & 0xF}, neither LOCAL nor PROXY")
    local = version_command == PROXY_V2_LOCAL
    if len(data) < 14:
        return None
    family = data[13]
    if not local and family not in _V2_FAMILIES:  # LOCAL: "the family ... is ignored"
        raise ProxyProtocolError(f"v2: address family and protocol 0x{family:02x} unassigned")
    if len(data) < 16:
        return None
    total = 16 + int.from_bytes(data[14:16], "big")
    if total > max_header:
        raise ProxyProtocolError(f"v2: a {total}-byte header, over the {max_header} accepted")
    name, address_length = ("LOCAL", 0) if local else _V2_FAMILIES[family]
    if total - 16 < address_length:
        raise ProxyProtocolError(f"v2: {total - 16} bytes for {name}, whose addresses take more")
    if len(data) < total:
        return None
    header = bytes(data[:total])
    if family not in (PROXY_V2_TCP4, PROXY_V2_TCP6) or local:
        return ProxyHeader(2, name, None, None, total)  # the connection's own endpoints stand
    size = 4 if family == PROXY_V2_TCP4 else 16
    kind = ipaddress.IPv4Address if family == PROXY_V2_TCP4 else ipaddress.IPv6Address
    body = header[16:]
    source_port, destination_port = struct.unpack_from("!HH", body, 2 * size)
    source = str(kind(body[:size])), source_port
    destination = str(kind(body[size : 2 * size])), destination_port
    tlvs = _tlvs(header, 16 + address_length)
    return ProxyHeader(2, name, source, destination, total, tlvs)


def _tlvs(header: bytes, offset: int) -> tuple[tuple[int, bytes], ...]:
    """The TLVs from ``offset`` to the header's end (2.2: type, 2-byte length, value), a CRC32C
    among them checked (2.2.3)."""
    found: list[tuple[int, bytes]] = []
    while offset < len(header):
        if len(header) - offset < 3:
            raise ProxyProtocolError("v2: stray bytes after the TLVs")
        kind, length = header[offset], int.from_bytes(header[offset + 1 : offset + 3], "big")
        value = header[offset + 3 : offset + 3 + length]
        if len(value) != length:
            raise ProxyProtocolError(f"v2: TLV 0x{kind:02x} overruns the header")
        if kind == PP2_TYPE_CRC32C:
            _check_crc32c(header, offset + 3, value)
        found.append((kind, value))
        offset += 3 + length
    return tuple(found)


def _check_crc32c(header: bytes, at: int, value: bytes) -> None:
    """2.2.3: the CRC32c of the whole header with the checksum's own 4 bytes zeroed."""
    if len(value) != 4:
        raise ProxyProtocolError(f"v2: a {len(value)}-byte CRC32C TLV (4 bytes)")
    zeroed = header[:at] + b"\x00\x00\x00\x00" + header[at + 4 :]
    if crc32c(zeroed) != int.from_bytes(value, "big"):
        raise ProxyProtocolError("v2: the CRC32C does not match the header")


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli), as RFC 4960 appendix B computes it (the stdlib has CRC32 only)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC32C_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFFFFFF


# --- The encoder: what the front door sends its backend (2.2) --------------------------------


def proxy_v2_header(
    source: tuple[str, int],
    destination: tuple[str, int],
    *,
    alpn: str | None = None,
    authority: str | None = None,
) -> bytes:
    """The PROXY protocol v2 header for a TCP connection from ``source`` to ``destination``
    (HAProxy's proxy-protocol.txt, section 2.2): the signature, PROXY, TCP4 when both addresses
    are IPv4 (an IPv4-mapped IPv6 address counts as IPv4) and TCP6 otherwise, the addresses and
    ports, then the ALPN and authority TLVs (sections 2.2.1, 2.2.2) when given."""
    src, dst = plain_address(source[0]), plain_address(destination[0])
    if src.version == dst.version == 4:
        family = PROXY_V2_TCP4
    else:  # section 2.2: both addresses in one family; IPv4 maps into IPv6 (RFC 4291 §2.5.5.2)
        family = PROXY_V2_TCP6
        src, dst = _v6(src), _v6(dst)
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    for kind, value in ((PP2_TYPE_ALPN, alpn), (PP2_TYPE_AUTHORITY, authority)):
        if value:
            data = value.encode()
            body += struct.pack("!BH", kind, len(data)) + data
    return PROXY_V2_SIGNATURE + struct.pack("!BBH", PROXY_V2_PROXY, family, len(body)) + body


def _v6(address: Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + address.packed)


# ---------------------------------------------------------------------------------------------
# Addresses: which balancers are trusted, and the client's address as the server keeps it


def plain_address(text: str) -> Address:
    """``text`` as an address: no IPv6 zone (it is local), an IPv4-mapped IPv6 address (from a
    dual-stack socket, or a balancer's TCP6 header) as the IPv4 address it is.  ValueError if it
    is none."""
    address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_networks(text: str | Iterable[str]) -> tuple[Network, ...]:
    """Balancer networks from ``"10.0.0.0/8,2001:db8::/32"`` (or several such strings): CIDR
    blocks, or single addresses.  ValueError names one with host bits set (``10.0.0.1/8``: say
    ``10.0.0.0/8``, or ``10.0.0.1`` for that one address) or that is no address."""
    items = [text] if isinstance(text, str) else list(text)
    networks = []
    for item in (part.strip() for piece in items for part in piece.split(",")):
        if item:
            networks.append(ipaddress.ip_network(item))
    if not networks:
        raise ValueError("no network given")
    return tuple(networks)


def trusted(peer: tuple[str, int], networks: tuple[Network, ...]) -> bool:
    """Whether ``peer`` (a socket's peer address) is in one of ``networks``, the balancers a
    PROXY header is expected from."""
    if not networks:
        return False
    try:
        address = plain_address(peer[0])
    except ValueError:  # not an IP socket
        return False
    return any(address in network for network in networks)


__all__ = [
    "MAX_HEADER",
    "PROXY_V1_MAX",
    "PROXY_V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyProtocolError",
    "crc32c",
    "parse_networks",
    "parse_proxy_header",
    "plain_address",
    "proxy_v2_header",
    "trusted",
]
