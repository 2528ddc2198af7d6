"""The stateless front of a QUIC server: what to do with a datagram for an unknown connection ID.

With :attr:`Validation.HRR` (the default) it answers a client's first Initial with an Initial
carrying a stateless HelloRetryRequest and keeps nothing; the connection is only created when
ClientHello2 brings back a cookie that authenticates for the client's IP address.  A first
Initial carrying a NEW_TOKEN token of ours for its IP address (RFC 9000 §8.1.3, given by
:meth:`InitialFront.new_token` after an earlier handshake) starts its connection at once, under
any validation.  With early data on, a ClientHello1 that offers 0-RTT gets a Retry where it would
have got the HRR (which would refuse its early data; 0-RTT survives a Retry), under every
validation that validates.  The design, the limits and the costs are in docs/QUIC.md.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.connection import QuicConnectionError
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from stateless13 import (
    AlertError,
    ClientHello,
    CookieVerified,
    DecryptError,
    IllegalParameter,
    LocalProtocolError,
    ReplayStore,
    RetryRequest,
    ServerConfig,
    answer_client_hello,
    client_hello_size,
    parse_client_hello,
)

from .common import UDP_RECEIVE_BUFFER, PressureGauge, Validation
from .quic_initial import (
    Initials,
    MalformedInitial,
    ReassemblyTable,
    TableKey,
    close_initial,
    contiguous,
    decrypt_initials,
    hrr_initial,
)
from .quic_tls import (
    NO_POST_HANDSHAKE_AUTH,
    ConnectionStart,
    ResumePoint,
    check_quic_client_hello,
)
from .quic_tokens import (
    MIN_ORIGINAL_CID_LENGTH,
    NEW_TOKEN_KIND,
    RETRY_TOKEN_KIND,
    SERVER_CID_LENGTH,
    AddressTokens,
    ConnectionIds,
    InvalidToken,
    QuicCookieState,
    RetryTokens,
    StaleRetryToken,
    token_kind,
)

#: The max_early_data_size of every ticket sent over QUIC while 0-RTT is on (RFC 9001 §4.6.1).
QUIC_MAX_EARLY_DATA = 0xFFFFFFFF
# The HRR's packet number comes from the clock (docs/QUIC.md): 4 ms ticks, modulo 8192.
_HRR_PACKET_NUMBER_TICKS = 250  # per second
_HRR_PACKET_NUMBER_SPAN = 8192


class ReplyKind(enum.Enum):
    """What a :class:`Reply` holds (the front's counters go by it)."""

    HRR = "hrr"
    RETRY = "retry"
    CLOSE = "close"
    VERSION_NEGOTIATION = "version_negotiation"


@dataclass(frozen=True)
class QuicOptions:
    """QUIC-side settings and limits of the front and the server (docs/QUIC.md: the table)."""

    #: Keys our connection IDs.  Give every server of a fleet the same bytes, as with the cookie
    #: keys (which seal the Retry tokens too), so that ClientHello2 may reach any of them.
    #: Default: random per process.
    secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    retry_token_lifetime: float = 10.0
    #: NEW_TOKEN (RFC 9000 §8.1.3): every connection gets a token when its handshake completes;
    #: for this many seconds from then, a first Initial carrying it from the same IP address
    #: starts its connection at once, with no HRR and no Retry, on any server holding the cookie
    #: keys that sealed it.  24 hours, as quic-go's server (a token under a key the ring no
    #: longer holds only costs its client the validation round trip).  0: no NEW_TOKEN frame is
    #: sent and every such token is ignored.
    new_token_lifetime: float = 24 * 3600.0
    #: Honour each NEW_TOKEN token once (RFC 9000 §8.1.4: "SHOULD NOT be accepted multiple
    #: times"): e.g. ``ReplayFilter(window=new_token_lifetime)``; a second use is ignored (the
    #: client is validated as if it had no token).  None (the default): a token is honoured for
    #: its whole lifetime, replays limited by the IP binding and the 3x limit (docs/QUIC.md).
    new_token_replay: ReplayStore | None = None
    reassembly_entries: int = 1024
    reassembly_bytes: int = 4 << 20
    reassembly_entry_bytes: int = 16 << 10
    reassembly_datagrams: int = 12
    reassembly_timeout: float = 2.0
    #: Connections at once (each created only after its address was validated, except with
    #: Validation.NONE); a ClientHello2 over the limit is dropped (the client retransmits).
    max_connections: int = 4096
    #: Seconds from the connection's creation to a completed handshake.
    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0
    supported_versions: tuple[int, ...] = (QuicProtocolVersion.VERSION_1,)
    #: The UDP socket's receive buffer, in bytes (``common.UDP_RECEIVE_BUFFER``: 7 MiB).  Set
    #: with SO_RCVBUFFORCE when the process may (root), else up to net.core.rmem_max.
    receive_buffer: int = UDP_RECEIVE_BUFFER
    #: Validation.ADAPTIVE: the stateless HRR goes on when more connections than this are
    #: handshaking (each one unvalidated may send 3x what it received, and costs a full
    #: handshake), off 5 s after it was last above half; a spoofed flood of a few Initials a
    #: second crosses it.
    adaptive_handshakes: int = 32
    #: Validation.ADAPTIVE: above this many new clients' Initials a second, a Retry (~33 µs)
    #: answers them instead of the HRR (~160 µs), as msquic switches above RetryMemoryLimit:
    #: one core answers about 6,000 HRRs a second; off 5 s after it was last above half.
    adaptive_retry_rate: float = 3000.0

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise LocalProtocolError("QuicOptions.secret needs at least 16 bytes")
        if min(self.reassembly_entries, self.reassembly_bytes, self.reassembly_datagrams) < 1:
            raise LocalProtocolError("reassembly limits must be positive")
        if self.reassembly_entry_bytes < SMALLEST_MAX_DATAGRAM_SIZE:
            raise LocalProtocolError(
                "reassembly_entry_bytes must hold at least one Initial datagram"
            )
        if min(self.adaptive_handshakes, self.adaptive_retry_rate) <= 0:
            raise LocalProtocolError("adaptive thresholds must be positive")
        if min(self.handshake_timeout, self.idle_timeout, self.reassembly_timeout) <= 0:
            raise LocalProtocolError("timeouts must be positive")
        if self.new_token_lifetime < 0:
            raise LocalProtocolError("new_token_lifetime cannot be negative (0: no NEW_TOKEN)")
        if not self.supported_versions:
            raise LocalProtocolError("QuicOptions needs at least one QUIC version")


class _RateMeter:
    """Events per second, over the last whole second and the one in progress (the larger of
    the two, so a sudden burst counts before its second is over)."""

    __slots__ = ("_count", "_last_rate", "_start")

    def __init__(self) -> None:
        self._start = 0.0
        self._count = 0
        self._last_rate = 0.0

    def rate(self, now: float) -> float:
        """Count one event at ``now``; the rate."""
        elapsed = now - self._start
        if not 0 <= elapsed < 1.0:
            self._last_rate = self._count / elapsed if 1.0 <= elapsed < 2.0 else 0.0
            self._start, self._count = now, 0
        self._count += 1
        return max(self._last_rate, self._count)


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``datagram`` to the client and forget it."""

    datagram: bytes
    kind: ReplyKind
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Accept:
    """Create a connection from ``start`` and feed it ``start.datagrams``."""

    start: ConnectionStart


@dataclass(frozen=True, slots=True)
class Pending:
    """Part of a ClientHello, held in the reassembly table."""


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


FrontResult = Reply | Accept | Pending | Drop


@dataclass
class FrontStats:
    """Counters for the whole server: no per-client data."""

    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    hrr_sent: int = 0
    retry_sent: int = 0
    closes_sent: int = 0
    version_negotiations_sent: int = 0
    accepted: int = 0
    pending: int = 0
    dropped: int = 0
    reassembly_evictions: int = 0
    #: NEW_TOKEN tokens sealed for connections whose handshake completed (InitialFront.new_token).
    tokens_issued: int = 0
    #: First Initials that started their connection on a NEW_TOKEN token (validation "token").
    tokens_accepted: int = 0
    #: First Initials whose token was neither one of our NEW_TOKEN tokens valid for them nor a
    #: Retry's (expired, another IP, another key, tampered, replayed, foreign): validated as if
    #: they had none.  Counted per datagram (every Initial of a client repeats its token).
    tokens_ignored: int = 0
    #: Of ``retry_sent``, the Retries sent where the stateless HRR would have gone, because the
    #: ClientHello1 offered 0-RTT (early_data with a pre_shared_key) and early data is on: an HRR
    #: refuses early data (RFC 8446 §4.1.2), a Retry keeps it (RFC 9000 §17.2.5.3).
    retry_for_0rtt: int = 0

    def count(self, result: FrontResult) -> None:
        if isinstance(result, Reply):
            self.datagrams_out += 1
            self.bytes_out += len(result.datagram)
            if result.kind is ReplyKind.HRR:
                self.hrr_sent += 1
            elif result.kind is ReplyKind.RETRY:
                self.retry_sent += 1
            elif result.kind is ReplyKind.CLOSE:
                self.closes_sent += 1
            else:
                self.version_negotiations_sent += 1
        elif isinstance(result, Accept):
            self.accepted += 1
        elif isinstance(result, Pending):
            self.pending += 1
        else:
            self.dropped += 1


@dataclass(slots=True)
class Datagram:
    """One datagram for an unknown connection ID, and what the front learns of it step by step.

    The one object the front's steps hand each other (as Go's handshake state), created once the
    header is known to be a client Initial worth reading."""

    data: bytes
    header: QuicHeader
    peer: tuple[str, int]
    now: float  # wall-clock time: the cookie's and the Retry token's clock
    #: The client's first DCID: this datagram's, the Retry token's, or the key CID.
    original_dcid: bytes
    #: The Retry's SCID, once a Retry token came back valid.
    retry_scid: bytes | None = None
    #: The CID the Initial keys derive from (RFC 9001 §5.2), and those keys.
    key_cid: bytes = b""
    keys: CryptoPair = field(default_factory=CryptoPair)
    #: Its decrypted Initials, joined to those held for the same ClientHello.
    initials: Initials = field(default_factory=Initials)

    @property
    def version(self) -> int:
        assert self.header.version is not None  # a long header: checked before
        return self.header.version

    @property
    def table_key(self) -> TableKey:
        return (self.peer[0], self.peer[1], self.header.destination_cid)

    def use_keys(self, key_cid: bytes) -> None:
        self.key_cid = key_cid
        self.keys.setup_initial(cid=key_cid, is_client=False, version=self.version)


class InitialFront:
    """Answers datagrams for unknown connection IDs; keeps no per-client state but the table.

    ``receive`` returns what to do: :class:`Reply` (send it and forget), :class:`Accept` (create
    the connection), :class:`Pending` (part of a ClientHello is in the reassembly table) or
    :class:`Drop`.

    A ``config.client_auth`` that asks only after the handshake (``post_handshake_only``) is
    refused with LocalProtocolError: QUIC forbids post-handshake authentication (RFC 9001 §4.4).
    ``config.early_data``, if not 0, is served as :data:`QUIC_MAX_EARLY_DATA` (``self.config``):
    0-RTT on.  A client that must prove its address (``HRR``, ``BOTH``, ``ADAPTIVE`` at its HRR
    level) and whose ClientHello1 offers 0-RTT then gets a Retry instead of the stateless HRR,
    and its connection at once when it comes back with the Retry's token (``_retry_for_0rtt``).
    """

    def __init__(
        self,
        config: ServerConfig,
        options: QuicOptions | None = None,
        *,
        validation: Validation | str = Validation.HRR,
        handshakes_in_progress: Callable[[], int] = lambda: 0,
    ) -> None:
        self.validation = Validation.parse(validation, tuple(Validation))
        if config.client_auth is not None and config.client_auth.post_handshake_only:
            # It would never ask: the handshake leaves it to a request QUIC forbids.
            raise LocalProtocolError(f"ClientAuth.post_handshake_only: {NO_POST_HANDSHAKE_AUTH}")
        #: ADAPTIVE: the server's count of connections still handshaking.
        self.handshakes_in_progress = handshakes_in_progress
        # RFC 9001 §4.6.1: a QUIC ticket promises 0xffffffff bytes of early data or none, flow
        # control being the bound; so any early_data turns 0-RTT on (early_data_replay stays).
        self.config = (
            dataclasses.replace(config, early_data=QUIC_MAX_EARLY_DATA)
            if config.early_data
            else config
        )
        self.options = options = options or QuicOptions()
        self.cids = ConnectionIds(options.secret)
        self.tokens = RetryTokens(config.cookie_keys, options.retry_token_lifetime)
        #: NEW_TOKEN tokens (None: QuicOptions.new_token_lifetime is 0, none sent or honoured).
        self.address_tokens = (
            AddressTokens(config.cookie_keys, options.new_token_lifetime, config.cookie_clock_skew)
            if options.new_token_lifetime > 0
            else None
        )
        self.table = ReassemblyTable(
            max_entries=options.reassembly_entries,
            max_bytes=options.reassembly_bytes,
            lifetime=options.reassembly_timeout,
        )
        self.stats = FrontStats()
        self._handshake_pressure = PressureGauge(options.adaptive_handshakes)
        self._flood = PressureGauge(options.adaptive_retry_rate)
        self._new_clients = _RateMeter()
        self._check_client_hello = functools.partial(check_quic_client_hello, config)

    # -- entry point --------------------------------------------------------------------------

    def receive(
        self,
        data: bytes,
        peer: tuple[str, int],
        now: float,
        header: QuicHeader | None = None,
    ) -> FrontResult:
        """``now`` is wall-clock time (the cookie's clock); ``header`` if already parsed."""
        self.stats.datagrams_in += 1
        self.stats.bytes_in += len(data)
        result = self._receive(data, peer, now, header)
        self.stats.count(result)
        self.stats.reassembly_evictions = self.table.evictions
        return result

    def _receive(
        self, data: bytes, peer: tuple[str, int], now: float, header: QuicHeader | None
    ) -> FrontResult:
        if header is None:
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=SERVER_CID_LENGTH)
            except (ValueError, BufferReadError):
                return Drop("unparsable header")
        refusal = self._check_header(data, header)
        if refusal is not None:
            return refusal
        token = header.token
        # After our Retry a client sends to its SCID, which is ours (SERVER_CID_LENGTH bytes): a
        # Retry token sent to a CID of another length was kept from another connection attempt.
        retry_token = (
            bool(token)
            and token_kind(token) == RETRY_TOKEN_KIND
            and len(header.destination_cid) == SERVER_CID_LENGTH
        )
        candidates: tuple[bytes, ...] | None = None
        if token and not retry_token:
            accepted = self._accept_with_token(data, header, peer, now)
            if accepted is not None:
                return accepted
        validation = self.validation
        if validation is Validation.ADAPTIVE:
            validation, candidates = self._adaptive(header, peer, now, retry_token, candidates)
        elif validation is Validation.HRR and retry_token:
            # The Retry a ClientHello1 offering 0-RTT got (_retry_for_0rtt): checked, then an
            # ordinary handshake, as after ADAPTIVE's Retries.
            validation = Validation.RETRY
        retry_first = validation in (Validation.RETRY, Validation.BOTH)
        if retry_first and not retry_token:
            return self._retry(header, peer, now)  # the cheapest answer: no per-datagram object
        datagram = Datagram(data, header, peer, now, original_dcid=header.destination_cid)
        if retry_first:
            refusal = self._check_retry_token(datagram)
            if refusal is not None:
                return refusal
        if validation in (Validation.RETRY, Validation.NONE):
            retried = datagram.retry_scid is not None
            return self._accept_at_once(datagram, validation="retry" if retried else "none")
        return self._stateless(datagram, candidates)

    def _adaptive(
        self,
        header: QuicHeader,
        peer: tuple[str, int],
        now: float,
        retry_token: bool,
        candidates: tuple[bytes, ...] | None,
    ) -> tuple[Validation, tuple[bytes, ...] | None]:
        """Validation.ADAPTIVE: how to treat this Initial, and the key CIDs its DCID may derive
        from if they were worked out (the HRR path takes them, rather than decode the DCID
        again).  A client already on one path stays on it (a Retry token; ClientHello2 to our
        HRR's CID; the rest of a ClientHello the table holds); a new client gets no validation
        while the server is calm, the stateless HRR when many handshakes are in progress, a
        Retry when new clients flood in.  A token that is not a Retry's counts for nothing here
        (a valid NEW_TOKEN token was taken before; any other is ignored)."""
        dcid = header.destination_cid
        if retry_token:
            return Validation.RETRY, None
        if candidates is None:
            candidates = self.cids.key_candidates(dcid)
        if len(candidates) > 1 or (peer[0], peer[1], dcid) in self.table:
            return Validation.HRR, candidates
        if self._flood(self._new_clients.rate(now), now):
            return Validation.RETRY, None
        if self._handshake_pressure(self.handshakes_in_progress(), now):
            return Validation.HRR, candidates
        return Validation.NONE, None

    @property
    def adaptive_level(self) -> Validation:
        """What ADAPTIVE answers a new client with now (the stat line shows it)."""
        if self.validation is not Validation.ADAPTIVE:
            return self.validation
        if self._flood.on:
            return Validation.RETRY
        return Validation.HRR if self._handshake_pressure.on else Validation.NONE

    def _check_header(self, data: bytes, header: QuicHeader) -> Reply | Drop | None:
        """Refuse all but a client Initial of a version we speak; None: read on."""
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return Drop("version negotiation packet")
        if header.version is None:
            return Drop("short header packet for an unknown connection ID")
        if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return Drop("datagram below 1200 bytes (RFC 9000 §14.1)")
        if header.version not in self.options.supported_versions:
            # RFC 9000 §6.1 (and only for datagrams of at least 1200 bytes: §5.2.2).
            packet = encode_quic_version_negotiation(
                source_cid=header.destination_cid,
                destination_cid=header.source_cid,
                supported_versions=list(self.options.supported_versions),
            )
            return Reply(packet, ReplyKind.VERSION_NEGOTIATION)
        if header.packet_type != QuicPacketType.INITIAL:
            return Drop("not an Initial packet")
        if len(header.destination_cid) < MIN_ORIGINAL_CID_LENGTH:
            return Drop("Destination Connection ID below 8 bytes (RFC 9000 §7.2)")
        return None

    # -- NEW_TOKEN ----------------------------------------------------------------------------

    def new_token(self, peer: tuple[str, int], now: float) -> bytes | None:
        """A NEW_TOKEN token for ``peer``'s IP address, issued at ``now`` (wall-clock), for a
        connection whose handshake has just completed (StatelessQuicConnection sends it in a
        NEW_TOKEN frame); None if ``QuicOptions.new_token_lifetime`` is 0."""
        if self.address_tokens is None:
            return None
        self.stats.tokens_issued += 1
        return self.address_tokens.seal(peer, now)

    def _accept_with_token(
        self,
        data: bytes,
        header: QuicHeader,
        peer: tuple[str, int],
        now: float,
    ) -> Accept | None:
        """A connection at once if this Initial's token (not a Retry's) lets its client in;
        None: validate the client as if it had no token.

        Only for the start of a client's ClientHello1, with a NEW_TOKEN token of ours that opens
        for its IP address within its lifetime (and once, with ``QuicOptions.new_token_replay``).
        Any other token is ignored, never refused (RFC 9000 §8.1.3: a server that lost its keys
        cannot tell its own old tokens from junk).  A ClientHello2 keeps its path whatever its
        token says (a server of the fleet without the token's key sent the HRR): it is sent to one
        of our HRR's CIDs, so it does not decrypt under keys from the CID it is sent to (its keys
        come from the client's first DCID), or, after a 20-byte first DCID, which our HRR keeps,
        its CRYPTO data does not start at 0; so does the rest of a held ClientHello.  That a
        client's own random DCID may read as one of our CIDs (``candidates`` has two: about once
        in 3,300 of quic-go's, whose first DCIDs are 8 to 20 bytes) changes nothing: it decrypts
        under its own keys."""
        if (peer[0], peer[1], header.destination_cid) in self.table:
            return None
        if not self._new_token_opens(header.token, peer, now):
            self.stats.tokens_ignored += 1
            return None
        datagram = Datagram(data, header, peer, now, original_dcid=header.destination_cid)
        if not self._decrypt(datagram, (header.destination_cid,)) or not any(
            offset == 0 for offset, _ in datagram.initials.fragments
        ):
            return None  # a ClientHello2, a later fragment, or junk: the ordinary path judges
        replay = self.options.new_token_replay
        if replay is not None and not replay.first_use(header.token, now):
            self.stats.tokens_ignored += 1
            return None
        self.stats.tokens_accepted += 1
        return self._connection_at_once(datagram, validation="token")

    def _new_token_opens(self, token: bytes, peer: tuple[str, int], now: float) -> bool:
        if self.address_tokens is None or token_kind(token) != NEW_TOKEN_KIND:
            return False
        try:
            self.address_tokens.open(token, peer, now)
        except InvalidToken:
            return False
        return True

    # -- QUIC Retry, and connections without the stateless HRR ----------------------------------

    def _retry(self, header: QuicHeader, peer: tuple[str, int], now: float) -> Reply:
        assert header.version is not None
        retry_scid = os.urandom(SERVER_CID_LENGTH)
        token = self.tokens.seal(peer, header.destination_cid, retry_scid, now)
        packet = encode_quic_retry(
            version=header.version,
            source_cid=retry_scid,
            destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid,
            retry_token=token,
        )
        return Reply(packet, ReplyKind.RETRY)

    def _check_retry_token(self, datagram: Datagram) -> Reply | None:
        """Learn the original DCID from the Retry token; a close if the token is not good (RFC
        9000 §8.1.2), a new Retry if it is one of ours from another connection attempt."""
        dcid = datagram.header.destination_cid
        try:
            datagram.original_dcid = self.tokens.open(
                datagram.header.token, datagram.peer, dcid, datagram.now
            )
        except StaleRetryToken:
            self.stats.tokens_ignored += 1
            return self._retry(datagram.header, datagram.peer, datagram.now)
        except InvalidToken as error:
            datagram.use_keys(dcid)
            refusal = QuicConnectionError(
                QuicErrorCode.INVALID_TOKEN, QuicFrameType.PADDING, str(error)
            )
            return self._close(datagram, refusal, summary="invalid Retry token")
        datagram.retry_scid = dcid
        return None

    def _accept_at_once(self, datagram: Datagram, validation: str) -> FrontResult:
        """Validation.RETRY (the token was good: ``validation`` "retry") or NONE ("none")."""
        if not self._decrypt(datagram, (datagram.header.destination_cid,)):
            return Drop("Initial does not decrypt")
        return self._connection_at_once(datagram, validation)

    def _connection_at_once(self, datagram: Datagram, validation: str) -> Accept:
        """A connection from this (decrypted) Initial, and those of its ClientHello the table
        held: ``validation`` "retry", "token" (a NEW_TOKEN token was good) or "none".  Only a
        Retry token validates the path for aioquic: after a NEW_TOKEN token the 3x limit holds
        until the client's first Handshake packet, so that a replayed token amplifies no more
        than Validation.NONE (RFC 9000 §8.1.4; docs/QUIC.md)."""
        retried = datagram.retry_scid is not None
        return Accept(
            ConnectionStart(
                key_cid=datagram.key_cid,
                host_cid=os.urandom(SERVER_CID_LENGTH),
                original_dcid=datagram.original_dcid,
                retry_scid=datagram.retry_scid,
                resume=None,
                address_validated=retried,
                validation=validation,
                datagrams=tuple(datagram.initials.datagrams),
                version=datagram.version,
            )
        )

    # -- the stateless HRR path ---------------------------------------------------------------

    def _stateless(
        self, datagram: Datagram, candidates: tuple[bytes, ...] | None = None
    ) -> FrontResult:
        """Validation.HRR or BOTH: decrypt, join what the table holds, read the ClientHello.
        ``candidates``: the key CIDs of the DCID, if the caller already worked them out."""
        if datagram.retry_scid is not None:
            candidates = (datagram.retry_scid,)
        elif candidates is None:
            candidates = self.cids.key_candidates(datagram.header.destination_cid)
        if not self._decrypt(datagram, candidates):
            return Drop("Initial does not decrypt")
        if datagram.initials.client_closed:
            self.table.pop(datagram.table_key)
            return Drop("the client closed")
        if not datagram.initials.fragments:
            return Drop("no CRYPTO data")
        if datagram.retry_scid is None:
            datagram.original_dcid = datagram.key_cid  # no Retry: the keys come from the ODCID
        held = self.table.take(datagram.table_key, datagram.now)
        if held is not None:
            held.extend(datagram.initials)
            datagram.initials = held
        return self._read_client_hello(datagram)

    def _read_client_hello(self, datagram: Datagram) -> FrontResult:
        """Answer the ClientHello the CRYPTO fragments hold, or hold them until it is whole."""
        max_hello = self.config.max_client_hello_size
        fragments = datagram.initials.fragments
        base, stream = contiguous(fragments)
        if base > 2 * max_hello or any(o + len(d) > 3 * max_hello for o, d in fragments):
            return Drop("CRYPTO data beyond any ClientHello")
        try:
            size = client_hello_size(stream, max_hello)
        except AlertError as error:
            if base:  # a later fragment came first: ClientHello2's start may still come
                return self._hold(datagram)
            return self._close(datagram, error)
        if size is None or len(stream) < size:
            return self._hold(datagram)
        return self._answer(datagram, stream[:size], crypto_offset=base)

    def _hold(self, datagram: Datagram) -> FrontResult:
        initials, options = datagram.initials, self.options
        if (
            initials.size > options.reassembly_entry_bytes
            or len(initials.datagrams) > options.reassembly_datagrams
        ):
            return Drop("partial ClientHello over the reassembly limits")
        self.table.put(datagram.table_key, initials)
        return Pending()

    def _answer(self, datagram: Datagram, message: bytes, crypto_offset: int) -> FrontResult:
        """ClientHello1 (at CRYPTO offset 0) gets the HRR, or if it offers 0-RTT a Retry (after
        one: its connection); ClientHello2 starts the connection."""
        try:
            hello = parse_client_hello(message, self.config.max_client_hello_size)
        except AlertError as error:
            if crypto_offset:
                return Drop(f"unparsable ClientHello at offset {crypto_offset}")
            return self._close(datagram, error)
        if crypto_offset == 0 and hello.cookie is None and self._offers_0rtt(hello):
            return self._retry_for_0rtt(datagram, hello)
        now = datagram.now
        packet_number = int(now * _HRR_PACKET_NUMBER_TICKS) % _HRR_PACKET_NUMBER_SPAN
        state = QuicCookieState(
            datagram.original_dcid, datagram.retry_scid, packet_number, len(message)
        )
        try:
            answer = answer_client_hello(
                self.config,
                message,
                hello=hello,
                peer=datagram.peer,
                now=now,
                cookie_payload=state.encode(),
                after_retry=crypto_offset > 0,
                check=self._check_client_hello,
            )
        except (QuicConnectionError, AlertError) as error:
            return self._close(datagram, error)
        if isinstance(answer, RetryRequest):
            return self._hello_retry(datagram, answer.hello_retry_request, packet_number)
        return self._resume(datagram, answer, crypto_offset)

    def _offers_0rtt(self, hello: ClientHello) -> bool:
        """Early data is on and ClientHello1 offers it (early_data with a pre_shared_key)."""
        offered = hello.early_data and hello.pre_shared_key is not None
        return offered and bool(self.config.early_data)

    def _retry_for_0rtt(self, datagram: Datagram, hello: ClientHello) -> FrontResult:
        """A ClientHello1 that offers 0-RTT, from a client that must prove its address: a Retry
        rather than the stateless HRR.  After any HelloRetryRequest early data is refused (RFC
        8446 §4.1.2; quic-go 0.29 then fails, gtlsclient aborts, Chromium stalls), where 0-RTT
        survives a Retry (RFC 9000 §17.2.5.3, RFC 9001 §4.6): the client sends its Initial again
        with the token and its 0-RTT packets, which start the connection at once, the early data
        judged there as always (ticket, age, replay store, transport parameters).  HRR and
        ADAPTIVE take a Retry token's Initial to a connection before reading it (``_receive``);
        BOTH reads it, and after its own Retry (``retry_scid``) a ClientHello1 offering 0-RTT
        gets its connection here rather than the HRR.  docs/QUIC.md ("Where the HRR would go")
        says why even ``Validation.HRR`` does so."""
        try:
            self._check_client_hello(hello)  # refused now rather than after a round trip
        except (QuicConnectionError, AlertError) as error:
            return self._close(datagram, error)
        if datagram.retry_scid is not None:
            return self._connection_at_once(datagram, validation="retry")
        self.stats.retry_for_0rtt += 1
        return self._retry(datagram.header, datagram.peer, datagram.now)

    def _hello_retry(
        self, datagram: Datagram, hello_retry_request: bytes, packet_number: int
    ) -> FrontResult:
        initials = datagram.initials
        packet = hrr_initial(
            datagram.header,
            host_cid=self.cids.encode(datagram.key_cid),
            keys=datagram.keys,
            packet_number=packet_number,
            acknowledge=initials.packet_numbers,
            hello_retry_request=hello_retry_request,
        )
        if len(packet) > 3 * initials.size:  # RFC 9000 §8.1 (cannot happen: >= 1200 received)
            return Drop("HRR would exceed 3x the bytes received")
        return Reply(packet, ReplyKind.HRR)

    def _resume(
        self, datagram: Datagram, verified: CookieVerified, crypto_offset: int
    ) -> FrontResult:
        """ClientHello2's cookie is good for its IP (the core checked it): check the QUIC state
        it carries against this packet, and start the connection from it."""
        try:
            try:
                state = QuicCookieState.decode(verified.cookie_payload)
            except ValueError as error:
                raise DecryptError(f"cookie without QUIC state: {error}") from None
            if state.key_cid != datagram.key_cid or state.retry_scid != datagram.retry_scid:
                raise IllegalParameter("cookie issued for another connection ID")
            if state.client_hello_length != crypto_offset:
                raise IllegalParameter("ClientHello2 does not follow ClientHello1 in CRYPTO")
        except AlertError as error:
            return self._close(datagram, error)
        # Above the HRR's number and anything the client acknowledges (docs/QUIC.md).
        next_packet_number = max(state.hrr_packet_number, datagram.initials.largest_acked) + 1
        return Accept(
            ConnectionStart(
                key_cid=datagram.key_cid,
                host_cid=datagram.header.destination_cid,
                original_dcid=state.original_dcid,
                retry_scid=state.retry_scid,
                resume=ResumePoint(
                    client_crypto_offset=crypto_offset,
                    server_crypto_offset=len(verified.hello_retry_request),
                    next_packet_number=next_packet_number,
                    cookie=verified,
                ),
                address_validated=True,
                validation="retry+cookie" if state.retry_scid is not None else "cookie",
                datagrams=tuple(datagram.initials.datagrams),
                version=datagram.version,
            )
        )

    # -- packets ------------------------------------------------------------------------------

    def _decrypt(self, datagram: Datagram, candidates: tuple[bytes, ...]) -> bool:
        """Decrypt the datagram's Initials with the first candidate key CID that works."""
        for key_cid in candidates:
            datagram.use_keys(key_cid)
            try:
                initials = decrypt_initials(datagram.data, datagram.keys, datagram.now)
            except MalformedInitial:
                return False
            if initials is not None:
                datagram.initials = initials
                return True
        return False

    def _close(
        self, datagram: Datagram, error: QuicConnectionError | AlertError, summary: str = ""
    ) -> Reply:
        """CONNECTION_CLOSE in an Initial under the datagram's keys; an alert as CRYPTO_ERROR."""
        if isinstance(error, AlertError):
            error = QuicConnectionError(
                error_code=QuicErrorCode.CRYPTO_ERROR + int(error.description),
                frame_type=QuicFrameType.CRYPTO,
                reason_phrase=str(error),
            )
        packet = close_initial(
            datagram.header,
            host_cid=self.cids.encode(datagram.key_cid),
            keys=datagram.keys,
            error=error,
        )
        return Reply(packet, ReplyKind.CLOSE, summary or error.reason_phrase)


__all__ = [
    "Accept",
    "Datagram",
    "Drop",
    "FrontResult",
    "FrontStats",
    "InitialFront",
    "Pending",
    "QUIC_MAX_EARLY_DATA",
    "QuicOptions",
    "Reply",
    "ReplyKind",
    "Validation",
]
