"""The stateless DTLS 1.3 listener (RFC 9147 §5.1): ``DTLSv1_listen`` for DTLS 1.3, sans-I/O.

Give it each datagram from an address that has no association yet, with the address and ``now``.
A ClientHello without a cookie gets a HelloRetryRequest datagram whose cookie (the same sealed
cookie as over TLS, bound to the client's IP *and port*, ``retry.answer_client_hello``) holds all
the server must remember; nothing is kept.  A ClientHello with a valid cookie becomes a
:class:`~.dtls_connection.DtlsConnection`, which carries on.

Before the cookie verifies, an answer is never larger than what the client sent for that
ClientHello (the HRR datagram of a 177-byte ClientHello is 172 bytes: DTLS cookies are 16 bytes
shorter, ``cookie.py``); an HRR that would be is not sent (``DtlsDrop``), so a spoofed source cannot
make the server an amplifier (§5.1).

A ClientHello split across datagrams (large key shares, long extension lists) is reassembled in
a table bounded in entries, bytes and time (:class:`PartialHelloTable`, as the QUIC front holds
multi-datagram Initials): a flood of fragments from spoofed addresses evicts its own entries and
cannot grow memory.  That table is the only state before the cookie.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from .alerts import AlertError, AlertLevel, LocalProtocolError
from .config import ServerConfig
from .dtls_connection import DtlsConnection
from .dtls_flight import (
    HANDSHAKE_HEADER_SIZE,
    HandshakeFragment,
    HandshakeReassembler,
    fragment_message,
    parse_fragments,
)
from .dtls_record import (
    DEFAULT_MAX_DATAGRAM_SIZE,
    DtlsContentType,
    PlaintextRecord,
    plaintext_record,
    split_datagram,
)
from .handshake import ServerHandshake
from .messages import HandshakeType
from .retry import RetryRequest, answer_client_hello

_CLIENT_HELLO = int(HandshakeType.client_hello)


@dataclass(frozen=True, slots=True)
class DtlsReply:
    """Send ``datagram`` to the client and forget it: our HelloRetryRequest, or an alert
    (``error`` says which and why)."""

    datagram: bytes
    error: AlertError | None = None


@dataclass(frozen=True, slots=True)
class DtlsAccept:
    """The cookie verified: ``connection`` is the association; its first flight waits in
    ``connection.datagrams_to_send()``."""

    connection: DtlsConnection


@dataclass(frozen=True, slots=True)
class DtlsHeld:
    """Part of a ClientHello, kept in the bounded table until the rest comes."""


@dataclass(frozen=True, slots=True)
class DtlsDrop:
    """Nothing to answer: ``reason`` says why (for counters, never for the client)."""

    reason: str


DtlsListenResult = DtlsReply | DtlsAccept | DtlsHeld | DtlsDrop


@dataclass(frozen=True)
class DtlsListenerLimits:
    """The listener's bounds (docs/SECURITY.md), all of them explicit."""

    #: The largest datagram we send (our flights are fragmented to fit): IPv6's minimum MTU
    #: less headers, safe on any path.
    max_datagram_size: int = DEFAULT_MAX_DATAGRAM_SIZE
    #: Partial ClientHellos held at once, bytes they may hold in all, and how long one waits.
    partial_hellos: int = 1024
    partial_hello_bytes: int = 4 << 20
    partial_hello_lifetime: float = 2.0
    #: Datagrams one partial ClientHello may take (a 16 KiB ClientHello in 1200-byte datagrams
    #: takes 14).
    partial_hello_datagrams: int = 16

    def __post_init__(self) -> None:
        if self.max_datagram_size < 256:
            raise LocalProtocolError("max_datagram_size: at least 256 bytes")
        if min(self.partial_hellos, self.partial_hello_bytes, self.partial_hello_datagrams) < 1:
            raise LocalProtocolError("partial ClientHello limits must be positive")
        if self.partial_hello_lifetime <= 0:
            raise LocalProtocolError("partial_hello_lifetime must be positive")


class _Partial:
    """One ClientHello being reassembled: its fragments, and what its datagrams weighed."""

    __slots__ = ("created", "datagrams", "reassembler", "received")

    def __init__(self, message_seq: int, max_size: int, now: float) -> None:
        self.created = now
        self.datagrams = 0
        self.received = 0  # bytes of the datagrams that brought its fragments
        self.reassembler = HandshakeReassembler(
            next_message_seq=message_seq,
            max_message_length=max_size,
            max_buffered=max_size,
            max_ahead=0,
        )


class PartialHelloTable:
    """Partial ClientHellos by (address, message_seq), oldest evicted first: bounded in entries,
    bytes (of the datagrams they took) and age, whatever the senders do."""

    def __init__(self, limits: DtlsListenerLimits) -> None:
        self._limits = limits
        self._entries: OrderedDict[tuple[str, int, int], _Partial] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, key: tuple[str, int, int], now: float) -> _Partial | None:
        self._expire(now)
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.received
        return entry

    def put(self, key: tuple[str, int, int], entry: _Partial) -> None:
        while self._entries and (
            len(self._entries) >= self._limits.partial_hellos
            or self.bytes + entry.received > self._limits.partial_hello_bytes
        ):
            _, oldest = self._entries.popitem(last=False)
            self.bytes -= oldest.received
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += entry.received

    def _expire(self, now: float) -> None:
        limit = now - self._limits.partial_hello_lifetime
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.created > limit:
                return
            del self._entries[key]
            self.bytes -= entry.received


@dataclass
class ListenerStats:
    """What the listener did, by outcome, and the bytes before any address was validated."""

    hello_retries: int = 0
    accepted: int = 0
    alerts: int = 0
    held: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: Bytes received in ClientHellos answered, and bytes answered (HRRs, alerts): the
    #: anti-amplification ratio is bytes_answered / bytes_received, at most 1 per answer.
    bytes_received: int = 0
    bytes_answered: int = 0
    largest_ratio: float = 0.0


class DtlsListener:
    """Answers the datagrams of addresses without an association; keeps only the bounded table.

    ``receive(datagram, peer, now)`` returns what to do: :class:`DtlsReply`, :class:`DtlsAccept`,
    :class:`DtlsHeld` or :class:`DtlsDrop`.  ``peer`` is (host, port): the cookie binds both.
    """

    def __init__(self, config: ServerConfig, limits: DtlsListenerLimits | None = None) -> None:
        self.config = config
        self.limits = limits or DtlsListenerLimits()
        self.table = PartialHelloTable(self.limits)
        self.stats = ListenerStats()

    def receive(self, datagram: bytes, peer: tuple[str, int], now: float) -> DtlsListenResult:
        # Our answers are numbered as the client's record (its replay window has not seen ours,
        # and we keep no counter of our own).
        found = self._client_hello(datagram, peer, now)
        if not isinstance(found, tuple):
            return self._count(found)
        message, message_seq, record_seq, received = found
        try:
            answer = answer_client_hello(
                self.config, message, peer=peer, now=now, after_retry=message_seq > 0, dtls=True
            )
            if isinstance(answer, RetryRequest):
                hrr = answer.hello_retry_request  # our message 0, whole in one fragment
                (fragment,) = fragment_message(hrr, 0, len(hrr) + HANDSHAKE_HEADER_SIZE)
                reply = plaintext_record(DtlsContentType.handshake, record_seq, fragment)
                if len(reply) > received:
                    return self._count(
                        DtlsDrop("HRR larger than the ClientHello (anti-amplification)")
                    )
                return self._count(DtlsReply(reply), received)
            handshake = ServerHandshake.resume_from_cookie(self.config, answer, peer=peer)
        except AlertError as error:  # a forged or stale cookie too: illegal_parameter (§5.1)
            alert = bytes((AlertLevel.fatal, error.description))
            datagram_out = plaintext_record(DtlsContentType.alert, record_seq, alert)
            return self._count(DtlsReply(datagram_out, error), received)
        connection = DtlsConnection(
            handshake,
            peer=peer,
            now=now,
            client_record_seq=record_seq,
            client_hello_bytes=received,
            max_datagram_size=self.limits.max_datagram_size,
        )
        return self._count(DtlsAccept(connection))

    def _client_hello(
        self, datagram: bytes, peer: tuple[str, int], now: float
    ) -> tuple[bytes, int, int, int] | DtlsHeld | DtlsDrop:
        """(ClientHello message, its message_seq, its last record's sequence number, bytes of the
        datagrams that brought it), once whole."""
        records = split_datagram(datagram).records
        hello: list[tuple[PlaintextRecord, HandshakeFragment]] = []
        for record in records:
            if not isinstance(record, PlaintextRecord):
                return DtlsDrop("protected record from an address without an association")
            if record.content_type == DtlsContentType.alert:
                return DtlsDrop("alert from an address without an association")
            if record.content_type != DtlsContentType.handshake or record.epoch != 0:
                return DtlsDrop(f"{record.content_type.name} record where a ClientHello belongs")
            try:
                fragments = parse_fragments(record.fragment)
            except AlertError:
                return DtlsDrop("malformed handshake record")
            for fragment in fragments:
                if fragment.msg_type != _CLIENT_HELLO or fragment.message_seq > 1:
                    return DtlsDrop("handshake message other than a ClientHello")
                hello.append((record, fragment))
        if not hello:
            return DtlsDrop("no ClientHello")
        first = hello[0][1]
        if any(f.message_seq != first.message_seq for _, f in hello):
            return DtlsDrop("fragments of two ClientHellos in one datagram")
        max_size = self.config.max_client_hello_size - 4
        if first.length > max_size:
            return DtlsDrop(f"ClientHello of {first.length} bytes over the limit")
        record_seq = hello[-1][0].sequence_number
        # The common case: the whole ClientHello in one fragment, nothing kept.
        if first.fragment_offset == 0 and len(first.body) == first.length and len(hello) == 1:
            header = bytes((_CLIENT_HELLO,)) + first.length.to_bytes(3, "big")
            return header + first.body, first.message_seq, record_seq, len(datagram)
        key = (peer[0], peer[1], first.message_seq)
        partial = self.table.take(key, now) or _Partial(first.message_seq, max_size, now)
        partial.datagrams += 1
        partial.received += len(datagram)
        try:
            for _, fragment in hello:
                partial.reassembler.feed(fragment)
        except AlertError:
            return DtlsDrop("inconsistent ClientHello fragments")
        ready = partial.reassembler.pop_messages()
        if ready:
            return ready[0][2], first.message_seq, record_seq, partial.received
        if partial.datagrams >= self.limits.partial_hello_datagrams:
            return DtlsDrop("partial ClientHello over the datagram limit")
        self.table.put(key, partial)
        return DtlsHeld()

    def _count(self, result: DtlsListenResult, received: int = 0) -> DtlsListenResult:
        stats = self.stats
        if isinstance(result, DtlsReply):
            if result.error is None:
                stats.hello_retries += 1
            else:
                stats.alerts += 1
            stats.bytes_received += received
            stats.bytes_answered += len(result.datagram)
            stats.largest_ratio = max(stats.largest_ratio, len(result.datagram) / received)
        elif isinstance(result, DtlsAccept):
            stats.accepted += 1
        elif isinstance(result, DtlsHeld):
            stats.held += 1
        else:
            stats.dropped[result.reason] = stats.dropped.get(result.reason, 0) + 1
        return result
