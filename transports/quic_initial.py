"""Initial packets without a connection: decrypt a client's, reassemble its ClientHello, send ours.

The front (``quic_front.py``) answers a first Initial before any aioquic connection exists, so it
reads and writes Initial packets itself: this module decrypts a datagram's Initials and collects
their CRYPTO fragments (:class:`Initials`), holds a ClientHello that spans datagrams in a bounded
:class:`ReassemblyTable`, and builds our Initial datagrams (the HRR, CONNECTION_CLOSE).  The
table's limits and why they suffice are in docs/QUIC.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import QuicConnectionError
from aioquic.quic.crypto import CryptoError, CryptoPair
from aioquic.quic.packet import (
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    pull_ack_frame,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.rangeset import RangeSet

from .quic_tokens import SERVER_CID_LENGTH

_ACK_FRAME_CAPACITY = 64
_CLOSE_FRAME_CAPACITY = 1 + 3 * 8
_CRYPTO_FRAME_OVERHEAD = 1 + 8 + 2
_MAX_REASON_BYTES = 200

#: (client IP, client port, the DCID it sent to): one ClientHello in flight.
TableKey = tuple[str, int, bytes]


@dataclass(slots=True)
class Initials:
    """What the client's Initial packets carried, decrypted: those of one datagram, or of all
    the datagrams of a ClientHello held in the table so far."""

    created: float = 0.0  # when the first of them arrived
    datagrams: list[bytes] = field(default_factory=list)
    packet_numbers: list[int] = field(default_factory=list)
    fragments: list[tuple[int, bytes]] = field(default_factory=list)  # CRYPTO (offset, data)
    largest_acked: int = -1
    client_closed: bool = False

    @property
    def size(self) -> int:
        return sum(len(d) for d in self.datagrams)

    def extend(self, later: Initials) -> None:
        self.datagrams += later.datagrams
        self.packet_numbers += later.packet_numbers
        self.fragments += later.fragments
        self.largest_acked = max(self.largest_acked, later.largest_acked)


class MalformedInitial(Exception):
    """An Initial that decrypts but breaks RFC 9000: no other key will make sense of it."""


def decrypt_initials(data: bytes, keys: CryptoPair, now: float) -> Initials | None:
    """The datagram's Initial packets under ``keys``; None if its first Initial does not decrypt."""
    initials = Initials(created=now, datagrams=[data])
    decrypted = False
    for start, encrypted_offset, header in _long_header_packets(Buffer(data=data)):
        if header.packet_type != QuicPacketType.INITIAL:
            continue  # coalesced 0-RTT (for the connection, if one starts here) or garbage
        end = start + header.packet_length
        try:
            plain_header, payload, packet_number = keys.decrypt_packet(
                data[start:end], encrypted_offset, 0
            )
        except (CryptoError, ValueError, IndexError):
            if not decrypted:
                return None
            continue
        if plain_header[0] & 0x0C:
            raise MalformedInitial("reserved bits set")
        decrypted = True
        initials.packet_numbers.append(packet_number)
        try:
            _parse_frames(payload, initials)
        except (BufferReadError, ValueError) as error:
            raise MalformedInitial(str(error)) from None
    return initials if decrypted else None


def _long_header_packets(buf: Buffer) -> Iterator[tuple[int, int, QuicHeader]]:
    """(start, offset of the packet number, header) of each long-header packet in a datagram."""
    while not buf.eof():
        start = buf.tell()
        try:
            header = pull_quic_header(buf, host_cid_length=SERVER_CID_LENGTH)
        except (ValueError, BufferReadError):
            return
        if header.version is None:
            return  # a short header packet runs to the end of the datagram
        yield start, buf.tell() - start, header
        buf.seek(start + header.packet_length)


def _parse_frames(payload: bytes, into: Initials) -> None:
    buf = Buffer(data=payload)
    size = len(payload)
    while not buf.eof():
        frame_type = buf.pull_uint_var()
        if frame_type == QuicFrameType.PADDING:
            position = buf.tell()
            buf.seek(size - len(payload[position:].lstrip(b"\x00")))
        elif frame_type == QuicFrameType.PING:
            continue
        elif frame_type in (QuicFrameType.ACK, QuicFrameType.ACK_ECN):
            ranges, _delay = pull_ack_frame(buf)
            if frame_type == QuicFrameType.ACK_ECN:
                for _ in range(3):
                    buf.pull_uint_var()
            into.largest_acked = max(into.largest_acked, ranges.bounds().stop - 1)
        elif frame_type == QuicFrameType.CRYPTO:
            offset = buf.pull_uint_var()
            length = buf.pull_uint_var()
            into.fragments.append((offset, buf.pull_bytes(length)))
        elif frame_type == QuicFrameType.TRANSPORT_CLOSE:
            into.client_closed = True
            return
        else:  # RFC 9000 §12.4: nothing else may be in an Initial packet
            raise MalformedInitial(f"frame type 0x{frame_type:x} in an Initial packet")


def contiguous(fragments: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """(lowest offset, the bytes contiguous from there)."""
    ordered = sorted(fragments, key=lambda f: f[0])
    base = ordered[0][0]
    out = bytearray()
    for offset, data in ordered:
        end = base + len(out)
        if offset > end:
            break
        if offset + len(data) > end:
            out += data[end - offset :]
    return base, bytes(out)


class ReassemblyTable:
    """Partial ClientHellos, bounded in entries, bytes and time (docs/QUIC.md)."""

    def __init__(self, *, max_entries: int, max_bytes: int, lifetime: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.lifetime = lifetime
        self._entries: dict[TableKey, Initials] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: TableKey) -> bool:
        return key in self._entries

    def pop(self, key: TableKey) -> Initials | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def take(self, key: TableKey, now: float) -> Initials | None:
        """Remove and return the entry for ``key`` unless it is past its lifetime."""
        self.expire(now)
        entry = self.pop(key)
        if entry is not None and entry.created <= now - self.lifetime:
            return None
        return entry

    def put(self, key: TableKey, entry: Initials) -> None:
        """Insert ``entry`` (taken out before it grew), evicting the oldest to make room."""
        self.pop(key)
        size = entry.size
        while self._entries and (
            len(self._entries) >= self.max_entries or self.bytes + size > self.max_bytes
        ):
            oldest = next(iter(self._entries))
            self.pop(oldest)
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += size

    def expire(self, now: float) -> None:
        limit = now - self.lifetime
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.created > limit:
                break
            self.pop(key)


def hrr_initial(
    client: QuicHeader,
    *,
    host_cid: bytes,
    keys: CryptoPair,
    packet_number: int,
    acknowledge: list[int],
    hello_retry_request: bytes,
) -> bytes:
    """Our Initial with the HRR at CRYPTO offset 0, acknowledging the client's Initials."""
    builder = _initial_packet(client, host_cid, keys, packet_number)
    acks = RangeSet()
    for number in acknowledge:
        acks.add(number)
    if len(acks):
        buf = builder.start_frame(QuicFrameType.ACK, capacity=_ACK_FRAME_CAPACITY)
        _push_ack_frame(buf, acks)
    crypto = hello_retry_request
    buf = builder.start_frame(QuicFrameType.CRYPTO, capacity=_CRYPTO_FRAME_OVERHEAD + len(crypto))
    buf.push_uint_var(0)
    buf.push_uint16(len(crypto) | 0x4000)
    buf.push_bytes(crypto)
    return _one_datagram(builder)


def close_initial(
    client: QuicHeader, *, host_cid: bytes, keys: CryptoPair, error: QuicConnectionError
) -> bytes:
    """Our Initial with CONNECTION_CLOSE: small, not ack-eliciting, so never padded."""
    builder = _initial_packet(client, host_cid, keys, packet_number=0)
    phrase = error.reason_phrase.encode("utf-8", "replace")[:_MAX_REASON_BYTES]
    buf = builder.start_frame(
        QuicFrameType.TRANSPORT_CLOSE, capacity=_CLOSE_FRAME_CAPACITY + len(phrase)
    )
    buf.push_uint_var(error.error_code)
    buf.push_uint_var(error.frame_type)
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    return _one_datagram(builder)


def _initial_packet(
    client: QuicHeader, host_cid: bytes, keys: CryptoPair, packet_number: int
) -> QuicPacketBuilder:
    assert client.version is not None
    builder = QuicPacketBuilder(
        host_cid=host_cid,
        peer_cid=client.source_cid,
        version=client.version,
        is_client=False,
        max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
        packet_number=packet_number,
    )
    builder.start_packet(QuicPacketType.INITIAL, keys)
    return builder


def _one_datagram(builder: QuicPacketBuilder) -> bytes:
    datagrams, _packets = builder.flush()
    assert len(datagrams) == 1
    return datagrams[0]


def _push_ack_frame(buf: Buffer, ranges: RangeSet) -> None:
    """An ACK frame (RFC 9000 §19.3), ACK delay 0, for at most the 4 newest ranges."""
    newest = list(ranges)[-4:]
    buf.push_uint_var(newest[-1].stop - 1)
    buf.push_uint_var(0)
    buf.push_uint_var(len(newest) - 1)
    buf.push_uint_var(newest[-1].stop - 1 - newest[-1].start)
    for older, newer in zip(reversed(newest[:-1]), reversed(newest[1:]), strict=True):
        buf.push_uint_var(newer.start - older.stop - 1)
        buf.push_uint_var(older.stop - 1 - older.start)


__all__ = [
    "Initials",
    "MalformedInitial",
    "ReassemblyTable",
    "TableKey",
    "close_initial",
    "contiguous",
    "decrypt_initials",
    "hrr_initial",
]
