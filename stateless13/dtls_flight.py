"""DTLS 1.3 handshake messages over records (RFC 9147 §5.2, §5.5, §5.7, §5.8, §7), sans-I/O.

The handshake engine speaks TLS-format messages (msg_type, u24 length, body), the format the
transcript is computed over (§5.2).  This module turns them into DTLS handshake fragments and
back, and keeps a flight alive until the peer has it:

* :func:`fragment_message` / :func:`parse_fragments`: the 12-byte DTLSHandshake header (§5.2).
* :class:`HandshakeReassembler`: fragments in any order, duplicated or overlapping, to whole
  TLS-format messages in message_seq order (§5.2, §5.5), in memory bounded by its parameters.
* :func:`encode_ack` / :func:`parse_ack`: the ACK content type's body (§7).
* :class:`FlightSender`: our last flight and its retransmission timer (§5.8), ACK-driven
  selective retransmission (§7.2), packed into datagrams of at most the PMTU.

Records, keys and datagram framing are ``dtls_record``'s: a FlightSender only asks a
:class:`RecordSealer` (a ``DtlsRecordLayer``) to seal handshake payloads in a given epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from .alerts import DecodeError, IllegalParameter, LocalProtocolError, UnexpectedMessage
from .messages import MAX_HANDSHAKE_MESSAGE_SIZE

HANDSHAKE_HEADER_SIZE = 12  # msg_type, length, message_seq, fragment_offset, fragment_length
MAX_MESSAGE_SEQ = 0xFFFF
_HANDSHAKE_CONTENT_TYPE = 22  # DtlsContentType.handshake
_MAX_RECORD_CONTENT = 1 << 14  # RFC 9147 §4: a record's content


# ---------------------------------------------------------------------------------------------
# The DTLSHandshake header (§5.2)


@dataclass(slots=True)
class HandshakeFragment:
    """One DTLSHandshake fragment: ``body`` is bytes fragment_offset.. of the message's body."""

    msg_type: int
    length: int  # of the whole message's body
    message_seq: int
    fragment_offset: int
    body: bytes

    @property
    def fragment_length(self) -> int:
        return len(self.body)

    def encode(self) -> bytes:
        return (
            _fragment_header(
                self.msg_type, self.length, self.message_seq, self.fragment_offset, len(self.body)
            )
            + self.body
        )


def _fragment_header(msg_type: int, length: int, seq: int, offset: int, size: int) -> bytes:
    return (
        bytes((msg_type,))
        + length.to_bytes(3, "big")
        + seq.to_bytes(2, "big")
        + offset.to_bytes(3, "big")
        + size.to_bytes(3, "big")
    )


def parse_fragments(payload: bytes) -> list[HandshakeFragment]:
    """The fragments of one handshake record's content (§5.5: several may share a record).

    DecodeError if the content is empty, ends inside a fragment, or a fragment runs past the
    length of its message.
    """
    if not payload:
        raise DecodeError("handshake record with no fragment")
    fragments = []
    pos = 0
    end = len(payload)
    while pos < end:
        if end - pos < HANDSHAKE_HEADER_SIZE:
            raise DecodeError(f"{end - pos} bytes where a DTLS handshake header needs 12")
        length = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        offset = int.from_bytes(payload[pos + 6 : pos + 9], "big")
        size = int.from_bytes(payload[pos + 9 : pos + 12], "big")
        start = pos + HANDSHAKE_HEADER_SIZE
        if size > end - start:
            raise DecodeError(f"handshake fragment of {size} bytes overruns its record")
        if offset + size > length:
            raise DecodeError(f"fragment {offset}+{size} past its message's {length} bytes")
        fragments.append(
            HandshakeFragment(
                payload[pos],
                length,
                (payload[pos + 4] << 8) | payload[pos + 5],
                offset,
                payload[start : start + size],
            )
        )
        pos = start + size
    return fragments


def _split_tls_message(message: bytes) -> tuple[int, bytes]:
    """msg_type and body of one TLS-format handshake message (the engine's output)."""
    if len(message) < 4 or int.from_bytes(message[1:4], "big") != len(message) - 4:
        raise LocalProtocolError("not one TLS-format handshake message")
    return message[0], message[4:]


def fragment_message(message: bytes, message_seq: int, max_fragment: int) -> list[bytes]:
    """A TLS-format handshake message as DTLSHandshake fragments (§5.2, §5.5) of at most
    ``max_fragment`` bytes each, their 12-byte header included (a record's room)."""
    msg_type, body = _split_tls_message(message)
    if not 0 <= message_seq <= MAX_MESSAGE_SEQ:
        raise LocalProtocolError(f"message_seq {message_seq}")
    room = max_fragment - HANDSHAKE_HEADER_SIZE
    if room < 1:
        raise LocalProtocolError(f"fragments of {max_fragment} bytes leave no room for a body")
    length = len(body)
    fragments = []
    offset = 0
    while True:
        size = min(room, length - offset)
        fragments.append(
            _fragment_header(msg_type, length, message_seq, offset, size)
            + body[offset : offset + size]
        )
        offset += size
        if offset >= length:
            return fragments


# ---------------------------------------------------------------------------------------------
# Reassembly (§5.2, §5.5)


class FragmentStatus(IntEnum):
    """What :meth:`HandshakeReassembler.feed` did with a fragment; says whether its record may be
    acknowledged (§7: never a record whose fragments were neither processed nor buffered)."""

    NEW = 0  # buffered or completed a message: ackable
    DUPLICATE = 1  # every byte was already held: ackable
    STALE = 2  # a message already delivered (the peer retransmits): ackable after the handshake
    DROPPED = 3  # not kept (too far ahead, over a bound): never ack its record


class _Partial:
    """One message being reassembled: its TLS-format bytes and the body ranges received."""

    __slots__ = ("data", "epoch", "length", "msg_type", "ranges", "received")

    def __init__(self, msg_type: int, length: int, epoch: int) -> None:
        self.msg_type = msg_type
        self.length = length
        self.epoch = epoch
        self.data = bytearray(4 + length)  # the TLS-format message, filled as fragments come
        self.data[0] = msg_type
        self.data[1:4] = length.to_bytes(3, "big")
        self.ranges: list[tuple[int, int]] = []  # sorted, disjoint, non-adjacent [start, end)
        self.received = 0

    @property
    def complete(self) -> bool:
        return self.received == self.length


class HandshakeReassembler:
    """DTLS handshake fragments in, whole TLS-format messages out, in message_seq order.

    ``feed`` takes each fragment with the epoch of its record; ``pop_messages`` returns
    ``(message_seq, epoch, message)`` for each message completed in order since the last call.

    Bounds (memory never exceeds about ``max_buffered`` bytes plus a small constant per held
    message, whatever arrives):

    * ``max_message_length`` (default 2^16, as TLS's MAX_HANDSHAKE_MESSAGE_SIZE): a longer
      announced body raises DecodeError.  A public attribute, so the server may lower it while it
      expects a ClientHello (``max_client_hello_size - 4``).
    * ``max_buffered`` (default ``max_message_length`` + 16 KiB): bytes of messages held (being
      reassembled, completed ahead of turn, or completed and not yet popped), counted by their
      announced lengths.  Messages ahead of the next expected one share ``max_buffered -
      max_message_length``, so the next one always fits once the caller pops what is ready:
      fragments that would break either bound are DROPPED, never buffered and then evicted
      (§7: an acknowledged fragment must stay buffered, or the handshake deadlocks).
    * ``max_ahead`` (default 4): a fragment of message_seq > next + max_ahead is DROPPED
      (§5.2: such messages SHOULD be queued but MAY be discarded).
    * ``max_ranges`` (default 64): disjoint received ranges per message; a fragment that would
      make more is DROPPED (a lossy but honest sender needs a few).

    Errors, all fatal: a fragment past its message's length → DecodeError; a fragment whose
    msg_type or length differs from earlier fragments of its message, or whose bytes differ
    where they overlap earlier ones → IllegalParameter (§5.5: "SHOULD abort the handshake with an
    illegal_parameter alert"); fragments of one message in different epochs → UnexpectedMessage.

    Fragments of messages already delivered (message_seq < next) are STALE: §5.2 discards them,
    and :meth:`take_peer_retransmission` tells the connection the peer resent its previous flight
    (§5.8.1: resend ours).  ``next_message_seq`` starts at 0, or where a stateless exchange left
    it (1 after a HelloRetryRequest).
    """

    def __init__(
        self,
        *,
        next_message_seq: int = 0,
        max_message_length: int = MAX_HANDSHAKE_MESSAGE_SIZE,
        max_buffered: int | None = None,
        max_ahead: int = 4,
        max_ranges: int = 64,
    ) -> None:
        if max_buffered is None:
            max_buffered = max_message_length + (1 << 14)
        if max_buffered < max_message_length or max_ahead < 0 or max_ranges < 1:
            raise LocalProtocolError("max_buffered below max_message_length, or no room at all")
        self.max_message_length = max_message_length
        self.max_buffered = max_buffered
        self.max_ahead = max_ahead
        self.max_ranges = max_ranges
        self._next = next_message_seq
        self._pending: dict[int, _Partial] = {}
        self._ready: list[tuple[int, int, bytes]] = []
        self._ready_bytes = 0
        self._peer_retransmitted = False
        self.stale_fragments = 0  # counters, for logs and tests
        self.dropped_fragments = 0

    @property
    def next_message_seq(self) -> int:
        """The message_seq of the next message to complete (next_receive_seq, §5.2)."""
        return self._next

    @property
    def buffered(self) -> int:
        """Bytes held, by announced lengths: at most ``max_buffered``."""
        return self._ready_bytes + sum(partial.length for partial in self._pending.values())

    @property
    def partial(self) -> bool:
        """Some message has fragments but is not complete and delivered yet."""
        return bool(self._pending)

    def take_peer_retransmission(self) -> bool:
        """Whether a fragment of an already delivered message arrived since the last call."""
        seen, self._peer_retransmitted = self._peer_retransmitted, False
        return seen

    def pop_messages(self) -> list[tuple[int, int, bytes]]:
        """(message_seq, epoch, TLS-format message) of the messages completed in order."""
        ready, self._ready, self._ready_bytes = self._ready, [], 0
        return ready

    def feed(self, fragment: HandshakeFragment, epoch: int = 0) -> FragmentStatus:
        """Take one fragment that arrived in a record of ``epoch``."""
        size = len(fragment.body)
        if fragment.fragment_offset + size > fragment.length:
            raise DecodeError("handshake fragment past the end of its message")
        seq = fragment.message_seq
        if seq < self._next:  # discarded unread (§5.2): the limit of its time let it through
            self.stale_fragments += 1
            self._peer_retransmitted = True
            return FragmentStatus.STALE
        if fragment.length > self.max_message_length:
            raise DecodeError(f"handshake message of {fragment.length} bytes exceeds the limit")
        if seq - self._next > self.max_ahead:
            self.dropped_fragments += 1
            return FragmentStatus.DROPPED
        partial = self._pending.get(seq)
        created = partial is None
        if partial is None:
            if not self._admit(seq, fragment.length):
                self.dropped_fragments += 1
                return FragmentStatus.DROPPED
            partial = _Partial(fragment.msg_type, fragment.length, epoch)
            self._pending[seq] = partial
        elif partial.msg_type != fragment.msg_type or partial.length != fragment.length:
            raise IllegalParameter(f"fragments of message {seq} disagree on its type or length")
        elif partial.epoch != epoch:
            raise UnexpectedMessage(f"handshake message {seq} split across epochs")
        status = self._merge(partial, fragment.fragment_offset, fragment.body)
        if status == FragmentStatus.DROPPED:
            self.dropped_fragments += 1
        elif created:  # a new message, if only its empty first fragment (or empty body)
            status = FragmentStatus.NEW
        while (ready := self._pending.get(self._next)) is not None and ready.complete:
            del self._pending[self._next]
            self._ready.append((self._next, ready.epoch, bytes(ready.data)))
            self._ready_bytes += ready.length
            self._next += 1
        return status

    def _admit(self, seq: int, length: int) -> bool:
        """Room for a new message of ``length`` (see the class's bounds)."""
        held = self.buffered
        if held + length > self.max_buffered:
            return False
        if seq == self._next:
            return True
        ahead = sum(p.length for s, p in self._pending.items() if s != self._next)
        return ahead + length <= self.max_buffered - self.max_message_length

    def _merge(self, partial: _Partial, offset: int, body: bytes) -> FragmentStatus:
        end = offset + len(body)
        if offset == end:
            return FragmentStatus.DUPLICATE
        data = partial.data
        for start, stop in partial.ranges:  # §5.5: overlapping bytes must not change
            low = max(start, offset)
            high = min(stop, end)
            if low < high and data[4 + low : 4 + high] != body[low - offset : high - offset]:
                raise IllegalParameter("a retransmitted handshake fragment changed bytes")
        merged: list[tuple[int, int]] = []
        new_start = offset
        new_end = end
        placed = False
        for start, stop in partial.ranges:
            if stop < new_start:
                merged.append((start, stop))
            elif start > new_end:
                if not placed:
                    merged.append((new_start, new_end))
                    placed = True
                merged.append((start, stop))
            else:  # overlapping or adjacent: absorbed
                new_start = min(new_start, start)
                new_end = max(new_end, stop)
        if not placed:
            merged.append((new_start, new_end))
        if len(merged) > self.max_ranges:
            return FragmentStatus.DROPPED
        received = sum(stop - start for start, stop in merged)
        if received == partial.received:
            return FragmentStatus.DUPLICATE
        data[4 + offset : 4 + end] = body
        partial.ranges = merged
        partial.received = received
        return FragmentStatus.NEW


# ---------------------------------------------------------------------------------------------
# ACK (§7)

MAX_ACK_RECORDS = 0xFFFF // 16  # RecordNumber record_numbers<0..2^16-1>: 4095 of 16 bytes


def encode_ack(record_numbers: Sequence[tuple[int, int]]) -> bytes:
    """The ACK body for these (epoch, sequence_number) pairs, sorted and deduplicated (§7: "in
    numerically increasing order").  At most MAX_ACK_RECORDS; choose which first (§7.1)."""
    numbers = sorted(set(record_numbers))
    if len(numbers) > MAX_ACK_RECORDS:
        raise LocalProtocolError(f"{len(numbers)} record numbers do not fit one ACK")
    out = bytearray((16 * len(numbers)).to_bytes(2, "big"))
    for epoch, seq in numbers:
        if not (0 <= epoch < 1 << 64 and 0 <= seq < 1 << 64):
            raise LocalProtocolError(f"record number ({epoch}, {seq})")
        out += epoch.to_bytes(8, "big") + seq.to_bytes(8, "big")
    return bytes(out)


def parse_ack(data: bytes) -> list[tuple[int, int]]:
    """The (epoch, sequence_number) pairs of an ACK body; DecodeError unless it is exactly a
    u16-length vector of 16-byte RecordNumbers (so at most MAX_ACK_RECORDS)."""
    if len(data) < 2:
        raise DecodeError("ACK shorter than its length field")
    length = (data[0] << 8) | data[1]
    if length != len(data) - 2:
        raise DecodeError(f"ACK of {len(data) - 2} bytes announces {length}")
    if length % 16:
        raise DecodeError(f"ACK record_numbers of {length} bytes, not a multiple of 16")
    return [
        (
            int.from_bytes(data[pos : pos + 8], "big"),
            int.from_bytes(data[pos + 8 : pos + 16], "big"),
        )
        for pos in range(2, 2 + length, 16)
    ]


# ---------------------------------------------------------------------------------------------
# Sending a flight and keeping it alive (§5.8, §7.2)


class RecordSealer(Protocol):
    """What a FlightSender needs of the record layer (``dtls_record.DtlsRecordLayer`` is one)."""

    max_datagram_size: int

    def record_overhead(self, epoch: int) -> int: ...

    def next_record_number(self, epoch: int | None = None) -> tuple[int, int]: ...

    def seal(self, content_type: int, data: bytes, epoch: int | None = None) -> bytes: ...


@dataclass(slots=True)
class FlightMessage:
    """One handshake message of a flight: the epoch it goes in, its message_seq (the
    connection's counter, §5.2: never reset), and the engine's TLS-format bytes."""

    epoch: int
    message_seq: int
    message: bytes


class _Outgoing:
    __slots__ = ("body", "epoch", "message_seq", "msg_type", "unacked")

    def __init__(self, message: FlightMessage) -> None:
        self.msg_type, self.body = _split_tls_message(message.message)
        if not 0 <= message.message_seq <= MAX_MESSAGE_SEQ:
            raise LocalProtocolError(f"message_seq {message.message_seq}")
        self.epoch = message.epoch
        self.message_seq = message.message_seq
        # Body ranges the peer has not acknowledged; [(0, 0)] for an empty body, so that it
        # still goes out once and an ACK of that fragment retires it.
        self.unacked: list[tuple[int, int]] = [(0, len(self.body))]

    def acknowledge(self, start: int, end: int) -> None:
        remaining: list[tuple[int, int]] = []
        for low, high in self.unacked:
            if low == high:  # the empty body's one fragment
                if not (start == low and end == high):
                    remaining.append((low, high))
            elif end <= low or start >= high:
                remaining.append((low, high))
            else:
                if low < start:
                    remaining.append((low, start))
                if end < high:
                    remaining.append((end, high))
        self.unacked = remaining


class FlightSender:
    """One retransmission state machine of §5.8.1 (the handshake's, or one per post-handshake
    category, §5.8.4): our last flight, until the peer has all of it.

    * :meth:`send` starts a flight (PREPARING → SENDING → WAITING) and returns its datagrams.
    * :meth:`on_timeout` at :meth:`next_timeout`: resend what is unacknowledged; the timer starts
      at ``initial_timeout`` (§5.8.2: 1 s) and doubles at each expiry up to ``max_timeout``
      (60 s).  At the first expiry ``give_up_after`` seconds (60) or more after the flight was
      first sent, the flight is abandoned: ``failed`` becomes True and the connection must close.
      With the defaults: transmissions at 0, 1, 3, 7, 15 and 31 s, failure at 63 s.
    * :meth:`on_ack`: §7.2, the fragments those records carried are retired; if some remain,
      they are resent at once (an empty ACK too: §7.1 sends one to shortcut the timer); once all
      are acknowledged, the timer stops.
    * :meth:`on_peer_retransmission`: the peer resent its previous flight (§5.8.1 (3)): resend
      what is unacknowledged.
    * :meth:`acknowledge_all`: the peer's next flight arrived, an implicit ACK (§7.2).

    Resends triggered by the peer (ACKs, retransmissions) keep the timer's value and are rate
    limited to one per ``min_resend_interval`` seconds (0.25) of each other, so a peer cannot
    make us flood (and the several ACKs one loss causes resend once); the first after a timed
    transmission goes out at once.  Each transmission uses new record numbers (§5.2); which
    numbers carried which fragments is remembered for :meth:`on_ack`.  A flight acknowledged
    without any retransmission sets the timer of the next flight to 1.5 times its round trip
    (§5.8.2), within [``min_timeout``, ``max_timeout``].

    Datagrams never exceed the sealer's ``max_datagram_size``; messages are fragmented to fit
    and several fragments (and records) share a datagram when they fit.  Not done: §5.8.3's
    "no more than 10 records in a single transmission" (every unacknowledged fragment goes
    out at once) and §4.4's fallback to smaller records after repeated timeouts.
    """

    def __init__(
        self,
        records: RecordSealer,
        *,
        initial_timeout: float = 1.0,
        max_timeout: float = 60.0,
        min_timeout: float = 0.1,
        give_up_after: float = 60.0,
        min_resend_interval: float = 0.25,
    ) -> None:
        if not 0 < min_timeout <= initial_timeout <= max_timeout:
            raise LocalProtocolError("timeouts must satisfy 0 < min <= initial <= max")
        self._records = records
        self.timeout = initial_timeout  # the current timer value (§5.8.2)
        self.max_timeout = max_timeout
        self.min_timeout = min_timeout
        self.give_up_after = give_up_after
        self.min_resend_interval = min_resend_interval
        self._messages: list[_Outgoing] = []
        self._carried: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        self._deadline: float | None = None
        self._first_sent = 0.0
        self._last_resend = float("-inf")  # the last resend the peer triggered
        self.transmissions = 0  # of the current flight
        self.failed = False

    @property
    def waiting(self) -> bool:
        """A flight is out and not yet (wholly) acknowledged."""
        return self._deadline is not None

    def next_timeout(self) -> float | None:
        """When :meth:`on_timeout` should run next, None when there is nothing to resend."""
        return self._deadline

    def send(self, messages: Sequence[FlightMessage], now: float) -> list[bytes]:
        """Start a new flight (the previous one is over) and return its datagrams."""
        if self.failed:
            raise LocalProtocolError("this flight sender gave up")
        if not messages:
            raise LocalProtocolError("a flight has at least one message")
        self._messages = [_Outgoing(message) for message in messages]
        self._carried = {}
        self.transmissions = 0
        self._first_sent = now
        self._last_resend = float("-inf")
        datagrams = self._transmit(now)
        self._deadline = now + self.timeout
        return datagrams

    def on_timeout(self, now: float) -> list[bytes]:
        """The datagrams to resend if the timer expired by ``now`` (else none)."""
        if self._deadline is None or now < self._deadline:
            return []
        if now - self._first_sent >= self.give_up_after:
            self.failed = True
            self._stop()
            return []
        self.timeout = min(self.timeout * 2, self.max_timeout)
        datagrams = self._transmit(now)
        self._deadline = now + self.timeout
        return datagrams

    def on_ack(self, record_numbers: Sequence[tuple[int, int]], now: float) -> list[bytes]:
        """An ACK's record numbers (§7.2); returns the datagrams to resend now, if any."""
        if self._deadline is None:
            return []
        for number in record_numbers:
            pieces = self._carried.pop(number, None)
            if pieces is None:
                continue
            for index, start, end in pieces:
                self._messages[index].acknowledge(start, end)
        if all(not message.unacked for message in self._messages):
            self._acknowledged(now)
            return []
        return self._resend(now)

    def on_peer_retransmission(self, now: float) -> list[bytes]:
        """The peer resent its previous flight: resend ours (rate limited)."""
        if self._deadline is None:
            return []
        return self._resend(now)

    def acknowledge_all(self, now: float) -> None:
        """The whole flight is acknowledged (implicitly, by the peer's next flight)."""
        if self._deadline is not None:
            self._acknowledged(now)

    def _acknowledged(self, now: float) -> None:
        if self.transmissions == 1:  # §5.8.2: a round trip measured without retransmission
            rtt = now - self._first_sent
            self.timeout = max(self.min_timeout, min(1.5 * rtt, self.max_timeout))
        self._stop()

    def _stop(self) -> None:
        self._deadline = None
        self._messages = []
        self._carried = {}

    def _resend(self, now: float) -> list[bytes]:
        if now - self._last_resend < self.min_resend_interval:
            return []
        self._last_resend = now
        datagrams = self._transmit(now)
        self._deadline = now + self.timeout
        return datagrams

    def _transmit(self, now: float) -> list[bytes]:
        """Every unacknowledged fragment, in fresh records packed into datagrams."""
        self.transmissions += 1
        packer = _Packer(self._records, self._carried)
        for index, message in enumerate(self._messages):
            for start, end in list(message.unacked):
                packer.add(index, message, start, end)
        return packer.finish()


class _Packer:
    """Greedy packing of handshake fragments into records, and records into datagrams."""

    __slots__ = ("_carried", "_datagram", "_datagrams", "_epoch", "_payload", "_pieces", "_sealer")

    def __init__(
        self, sealer: RecordSealer, carried: dict[tuple[int, int], list[tuple[int, int, int]]]
    ) -> None:
        self._sealer = sealer
        self._carried = carried
        self._datagrams: list[bytes] = []
        self._datagram = bytearray()
        self._epoch = -1  # the open record's epoch, -1 when none is open
        self._payload = bytearray()
        self._pieces: list[tuple[int, int, int]] = []

    def _close_record(self) -> None:
        if self._epoch >= 0 and self._pieces:
            number = self._sealer.next_record_number(self._epoch)
            record = self._sealer.seal(_HANDSHAKE_CONTENT_TYPE, bytes(self._payload), self._epoch)
            self._datagram += record
            self._carried[number] = self._pieces
        self._epoch = -1
        self._payload = bytearray()
        self._pieces = []

    def _close_datagram(self) -> None:
        self._close_record()
        if self._datagram:
            self._datagrams.append(bytes(self._datagram))
            self._datagram = bytearray()

    def add(self, index: int, message: _Outgoing, start: int, end: int) -> None:
        """Fragments of body bytes start..end of ``message`` (index ``index`` in the flight)."""
        limit = self._sealer.max_datagram_size
        overhead = self._sealer.record_overhead(message.epoch)
        pos = start
        while True:
            if self._epoch != message.epoch:
                self._close_record()
            used = len(self._datagram) + overhead + len(self._payload)
            room = min(limit - used, _MAX_RECORD_CONTENT - len(self._payload))
            space = room - HANDSHAKE_HEADER_SIZE
            remaining = end - pos
            # A fragment smaller than 64 bytes (unless it ends the message) is not worth its
            # 12-byte header: start a new datagram instead, if this one holds anything.
            if space < min(remaining, 64) and (self._datagram or self._pieces):
                self._close_datagram()
                continue
            if space < min(remaining, 1):
                raise LocalProtocolError(f"a datagram of {limit} bytes cannot carry a fragment")
            self._epoch = message.epoch
            size = min(space, remaining)
            self._payload += _fragment_header(
                message.msg_type, len(message.body), message.message_seq, pos, size
            )
            self._payload += message.body[pos : pos + size]
            self._pieces.append((index, pos, pos + size))
            pos += size
            if pos >= end:
                return

    def finish(self) -> list[bytes]:
        self._close_datagram()
        return self._datagrams
