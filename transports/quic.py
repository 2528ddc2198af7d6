"""QUIC for stateless13: our TLS 1.3 handshake inside aioquic, with a stateless first Initial.

Two pieces, both sans-I/O (the asyncio server is in ``quic_server.py``):

* :class:`QuicTLS` and :class:`StatelessQuicConnection`: aioquic's ``QuicConnection`` with
  stateless13's ``ServerHandshake`` in place of ``aioquic.tls.Context``.  CRYPTO bytes of one
  epoch go in, ``SendHandshake`` actions become CRYPTO data of their epoch, ``InstallSecret``
  actions become aioquic packet keys, our ``AlertError`` becomes aioquic's ``tls.Alert`` (so the
  connection closes with CRYPTO_ERROR + the alert).  A ClientHello with a non-empty
  legacy_session_id is refused with PROTOCOL_VIOLATION (RFC 9001 §8.4), so no middlebox CCS is
  ever asked for; a TLS KeyUpdate is refused with unexpected_message (RFC 9001 §6); a client
  without ALPN gets no_application_protocol (RFC 9001 §8.1).
* :class:`InitialFront`: what the server does with a datagram for a connection ID it does not
  know.  With ``validation="hrr"`` it answers a client's first Initial with an Initial carrying
  a stateless HelloRetryRequest and keeps nothing; the connection is only created when
  ClientHello2 brings back a cookie that authenticates for the client's IP address.

How the second Initial carries everything (no per-client entry on the server)
-------------------------------------------------------------------------------

Initial keys come from the Destination Connection ID of the client's *first* Initial (ODCID,
RFC 9001 §5.2), but after our HRR the client addresses us by the Source Connection ID we chose.
So that SCID encodes the ODCID: our connection IDs are 20 bytes, and for an ODCID of 8 to 19
bytes the SCID is ``Feistel_k(len | ODCID | zeros)`` (a keyed 20-byte permutation, so it looks
random); a 20-byte ODCID is used as it is.  Decoding a 20-byte DCID gives at most two candidate
key CIDs; the Initial's AEAD tells which one is right.

The rest rides in the cookie's 64-byte application payload, sealed and bound to the client's IP
by stateless13 (:class:`QuicCookieState`, 19 to 52 bytes): the ODCID (for the
original_destination_connection_id transport parameter), the Retry SCID if a Retry came first,
the HRR's packet number and ClientHello1's length.  On ClientHello2 the front opens the cookie
(it must authenticate for the sender's IP, be fresh, and name the key CID the packet was
decrypted with), then builds the connection: Initial keys from the key CID, our CID = the DCID
ClientHello2 was sent to (so initial_source_connection_id matches the HRR's SCID), the client's
CRYPTO stream resuming at len(ClientHello1), ours at len(HRR) (rebuilt from the cookie exactly as
the core rebuilds it), Initial packet numbers above both the HRR's and anything the client
acknowledges, and the path counted as validated (the cookie proves the address).

So over QUIC the cookie payload is the adapter's: ``ServerConfig.cookie_verifier`` sees these
bytes, and the application cannot add its own.  A captured ClientHello2 replayed from the same
(spoofed) IP goes to the connection it created while that lives; afterwards, within the cookie
lifetime, it would create a connection that dies at the first flight unless the replay is refused
by ``ServerConfig.replay_filter`` (then the TLS layer closes it at once).

The HRR's packet number is taken from the clock (4 ms ticks, modulo 8192): a retransmitted
ClientHello1 gets a new HRR (with a new cookie) under another packet number, so no packet number
is reused with different content, and every number stays decodable by a peer with no state.

ClientHellos spanning several datagrams
---------------------------------------

A ClientHello that fits one Initial datagram (every ClientHello of gtlsclient and quic-go; both
ClientHellos of most clients) never touches any table.  One that does not (Chromium's ~1.9 KB
ClientHello1 with an X25519MLKEM768 share; any ClientHello2 that repeats such a share) is held
in a small reassembly table, keyed by (client address, DCID), until it is complete:

==========================  =========  ====================================================
limit                       default    (``QuicOptions``)
==========================  =========  ====================================================
entries                     1024       ``reassembly_entries``; the oldest is evicted
bytes held, all entries     4 MiB      ``reassembly_bytes``; the oldest are evicted
bytes held, one entry       16 KiB     ``reassembly_entry_bytes``; more drops the entry
datagrams, one entry        12         ``reassembly_datagrams``
lifetime of an entry        2 s        ``reassembly_timeout``
==========================  =========  ====================================================

Nothing is sent for a partial ClientHello.  A flood of spoofed first fragments can only evict
other partial entries; a legitimate client loses its entry only if more than ``entries``
fragments arrive between its own datagrams (normally sent back to back), and then simply
retransmits.  Single-datagram ClientHellos are never affected.  ``validation="both"`` (Retry
first) keeps spoofed addresses out of the table altogether.

Address validation and amplification
------------------------------------

``validation`` is ``"hrr"`` (stateless HRR, the default), ``"retry"`` (a QUIC Retry with a
stateless token, then an ordinary handshake), ``"both"`` (Retry, then the stateless HRR) or
``"none"`` (a connection per first Initial, as aioquic does).  Before an address is validated by
a cookie or a Retry token, the front sends at most one datagram per datagram received and never
more than 3x the bytes it received (RFC 9000 §8.1): the HRR is one 1200-byte datagram (RFC 9000
§14.1 padding) for >= 1200 bytes received; a Retry or a CONNECTION_CLOSE is ~60-200 bytes.  With
``"none"``, aioquic's own per-path accounting enforces the 3x limit.

Costs
-----

Measured on the 2-core development machine, one core, aioquic 1.7.2: a first Initial answered
with an HRR 200 us (5,000/s; half of it is deriving the Initial keys), with a Retry 12 us, a
ClientHello2 through the front 150 us, and then the connection's first flight (ECDHE, signature)
1.1 ms; a partial ClientHello fragment into the table 70 us.  10,000 spoofed first Initials leave
no connection, no table entry and under 1 KB of memory behind (tests/interop/test_quic.py).

aioquic versions
----------------

This module subclasses ``QuicConnection`` and sets a few of its private attributes
(``_initialize``, ``_handle_crypto_frame``, ``_crypto_streams``, ``_packet_number``,
``_host_cids``, ``_local_initial_source_connection_id``, ``_network_paths``) and of its CRYPTO
stream (``_buffer_start``, ``_buffer_stop``).  The whole test suite passes with aioquic 1.2.0,
1.4.0, 1.6.1, 1.7.0 and 1.7.2 (1.1.0 does not install here): pin ``aioquic>=1.2,<1.8``.

aioquic numbers packets with one counter for all packet number spaces, so after a stateless HRR
the Handshake and 1-RTT spaces also start above the HRR's number rather than at 0 (RFC 9000
§12.3 describes them as starting at 0; no peer tested checks it: numbers only have to grow).
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from aioquic import tls
from aioquic._buffer import Buffer, BufferReadError
from aioquic._crypto import CryptoError
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import (
    NetworkAddress,
    QuicConnection,
    QuicConnectionError,
    QuicReceiveContext,
)
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicHeader,
    QuicPacketType,
    QuicProtocolVersion,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_ack_frame,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.rangeset import RangeSet
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import load_der_x509_certificate

from stateless13 import (
    Action,
    AlertError,
    ClientHello,
    CookieVerified,
    DecryptError,
    Epoch,
    ExtensionType,
    HandshakeDone,
    HandshakeSummary,
    IllegalParameter,
    InstallSecret,
    LocalProtocolError,
    MissingExtension,
    RetryRequest,
    SendHandshake,
    ServerConfig,
    ServerHandshake,
    TLSError,
    UnexpectedMessage,
    answer_client_hello,
    client_hello_size,
    parse_client_hello,
    peer_binding,
    select_alpn,
)

Validation = Literal["hrr", "retry", "both", "none"]
VALIDATIONS: tuple[Validation, ...] = ("hrr", "retry", "both", "none")

#: Every connection ID we issue is this long (aioquic parses short headers by it).
SERVER_CID_LENGTH = 20
#: RFC 9000 §7.2: a client's first Destination Connection ID is at least 8 bytes.
MIN_ORIGINAL_CID_LENGTH = 8
_CID_HALF = SERVER_CID_LENGTH // 2
_FEISTEL_ROUNDS = 4
_ACK_FRAME_CAPACITY = 64
_CLOSE_FRAME_CAPACITY = 1 + 3 * 8
_CRYPTO_FRAME_OVERHEAD = 1 + 8 + 2
_RETRY_TOKEN_VERSION = 1
_RETRY_NONCE_SIZE = 12
_HRR_PACKET_NUMBER_TICKS = 250  # per second: 4 ms ticks
_HRR_PACKET_NUMBER_SPAN = 8192


@dataclass(frozen=True)
class QuicOptions:
    """QUIC-side settings and limits of the stateless front (module docstring: the table)."""

    #: Keys our connection IDs and Retry tokens (HKDF-style derivations of it).  Give every
    #: server of a fleet the same bytes, as with the cookie keys, so that ClientHello2 (and a
    #: token) may reach any of them.  Default: random per process.
    secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    retry_token_lifetime: float = 10.0
    reassembly_entries: int = 1024
    reassembly_bytes: int = 4 << 20
    reassembly_entry_bytes: int = 16 << 10
    reassembly_datagrams: int = 12
    reassembly_timeout: float = 2.0
    #: Connections at once (each created only after its address was validated, except with
    #: validation="none"); a ClientHello2 over the limit is dropped (the client retransmits).
    max_connections: int = 4096
    #: Seconds from the connection's creation to a completed handshake.
    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0
    supported_versions: tuple[int, ...] = (QuicProtocolVersion.VERSION_1,)

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise LocalProtocolError("QuicOptions.secret needs at least 16 bytes")
        if min(self.reassembly_entries, self.reassembly_bytes, self.reassembly_datagrams) < 1:
            raise LocalProtocolError("reassembly limits must be positive")
        if self.reassembly_entry_bytes < SMALLEST_MAX_DATAGRAM_SIZE:
            raise LocalProtocolError(
                "reassembly_entry_bytes must hold at least one Initial datagram"
            )
        if min(self.handshake_timeout, self.idle_timeout, self.reassembly_timeout) <= 0:
            raise LocalProtocolError("timeouts must be positive")
        if not self.supported_versions:
            raise LocalProtocolError("QuicOptions needs at least one QUIC version")


def quic_configuration(config: ServerConfig, options: QuicOptions) -> QuicConfiguration:
    """The aioquic configuration for our connections (the TLS settings stay in ``config``)."""
    credential = config.credentials[0]
    return QuicConfiguration(
        is_client=False,
        alpn_protocols=[p.decode("ascii", "replace") for p in config.alpn_protocols],
        # aioquic insists on a certificate and key for a server; only aioquic's own TLS, which
        # QuicTLS replaces, would use them.
        certificate=load_der_x509_certificate(credential.certificate_chain[0]),
        private_key=credential.private_key,
        connection_id_length=SERVER_CID_LENGTH,
        idle_timeout=options.idle_timeout,
        supported_versions=list(options.supported_versions),
    )


# ---------------------------------------------------------------------------------------------
# Connection IDs, the cookie's QUIC state, Retry tokens.


def _derive(secret: bytes, label: bytes) -> bytes:
    return hmac.digest(secret, b"stateless13 quic " + label, "sha256")


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class ConnectionIds:
    """Our 20-byte connection IDs that encode the client's key CID (module docstring)."""

    def __init__(self, secret: bytes) -> None:
        self._key = _derive(secret, b"cid v1")

    def _round(self, number: int, half: bytes) -> bytes:
        return hmac.digest(self._key, bytes((number,)) + half, "sha256")[:_CID_HALF]

    def _permute(self, block: bytes) -> bytes:
        left, right = block[:_CID_HALF], block[_CID_HALF:]
        for number in range(_FEISTEL_ROUNDS):
            left, right = right, _xor(left, self._round(number, right))
        return left + right

    def _unpermute(self, block: bytes) -> bytes:
        left, right = block[:_CID_HALF], block[_CID_HALF:]
        for number in reversed(range(_FEISTEL_ROUNDS)):
            left, right = _xor(right, self._round(number, left)), left
        return left + right

    def encode(self, key_cid: bytes) -> bytes:
        """Our CID for a client whose Initial keys come from ``key_cid``."""
        if len(key_cid) == SERVER_CID_LENGTH:
            return key_cid
        if not MIN_ORIGINAL_CID_LENGTH <= len(key_cid) < SERVER_CID_LENGTH:
            raise LocalProtocolError(f"cannot encode a {len(key_cid)}-byte connection ID")
        padding = bytes(SERVER_CID_LENGTH - 1 - len(key_cid))
        return self._permute(bytes((len(key_cid),)) + key_cid + padding)

    def key_candidates(self, dcid: bytes) -> tuple[bytes, ...]:
        """The CIDs an Initial sent to ``dcid`` may derive its keys from, likeliest first."""
        if len(dcid) != SERVER_CID_LENGTH:
            return (dcid,)
        block = self._unpermute(dcid)
        length = block[0]
        if MIN_ORIGINAL_CID_LENGTH <= length < SERVER_CID_LENGTH and not any(block[1 + length :]):
            return (block[1 : 1 + length], dcid)
        return (dcid,)


@dataclass(frozen=True, slots=True)
class QuicCookieState:
    """What the QUIC side keeps in the cookie's application payload (authenticated, sealed)."""

    original_dcid: bytes
    retry_scid: bytes | None  # the Retry's SCID if a Retry came before the HRR
    hrr_packet_number: int
    client_hello_length: int  # CRYPTO bytes of ClientHello1: where ClientHello2 starts

    FORMAT = 1

    @property
    def key_cid(self) -> bytes:
        """The CID the client's Initial keys derive from (RFC 9001 §5.2)."""
        return self.retry_scid if self.retry_scid is not None else self.original_dcid

    def encode(self) -> bytes:
        flags = 1 if self.retry_scid is not None else 0
        out = bytes((self.FORMAT, flags))
        out += self.hrr_packet_number.to_bytes(4, "big")
        out += self.client_hello_length.to_bytes(4, "big")
        out += bytes((len(self.original_dcid),)) + self.original_dcid
        if self.retry_scid is not None:
            out += bytes((len(self.retry_scid),)) + self.retry_scid
        return out

    @classmethod
    def decode(cls, data: bytes) -> QuicCookieState:
        """Raises ValueError for a payload we did not write (e.g. from a TCP server's cookie)."""
        if len(data) < 11 or data[0] != cls.FORMAT or data[1] > 1:
            raise ValueError("not a QUIC cookie payload")
        packet_number = int.from_bytes(data[2:6], "big")
        length = int.from_bytes(data[6:10], "big")
        end = 11 + data[10]
        original = data[11:end]
        retry: bytes | None = None
        if data[1]:
            if len(data) < end + 1:
                raise ValueError("QUIC cookie payload truncated")
            retry = data[end + 1 : end + 1 + data[end]]
            end += 1 + data[end]
        if len(data) != end or len(original) < MIN_ORIGINAL_CID_LENGTH:
            raise ValueError("QUIC cookie payload malformed")
        return cls(original, retry, packet_number, length)


class InvalidToken(Exception):
    pass


class RetryTokens:
    """Stateless Retry tokens: AES-128-GCM over (issued_at, ODCID, Retry SCID), bound to the IP."""

    def __init__(self, secret: bytes, lifetime: float) -> None:
        self._aead = AESGCM(_derive(secret, b"retry token v1")[:16])
        self.lifetime = lifetime

    def seal(self, peer: NetworkAddress, odcid: bytes, retry_scid: bytes, now: float) -> bytes:
        nonce = os.urandom(_RETRY_NONCE_SIZE)
        plain = int(now * 1000).to_bytes(8, "big")
        plain += bytes((len(odcid),)) + odcid + bytes((len(retry_scid),)) + retry_scid
        associated = bytes((_RETRY_TOKEN_VERSION,)) + peer_binding(peer)
        return bytes((_RETRY_TOKEN_VERSION,)) + nonce + self._aead.encrypt(nonce, plain, associated)

    def open(self, token: bytes, peer: NetworkAddress, dcid: bytes, now: float) -> bytes:
        """The ODCID, if the token is ours, for this IP, for ``dcid`` and fresh."""
        if len(token) < 1 + _RETRY_NONCE_SIZE + 16 or token[0] != _RETRY_TOKEN_VERSION:
            raise InvalidToken("not one of our Retry tokens")
        nonce = token[1 : 1 + _RETRY_NONCE_SIZE]
        associated = bytes((_RETRY_TOKEN_VERSION,)) + peer_binding(peer)
        try:
            plain = self._aead.decrypt(nonce, token[1 + _RETRY_NONCE_SIZE :], associated)
        except InvalidTag:
            raise InvalidToken("Retry token does not authenticate for this address") from None
        issued = int.from_bytes(plain[:8], "big") / 1000
        odcid_end = 9 + plain[8]
        odcid = plain[9:odcid_end]
        retry_scid = plain[odcid_end + 1 : odcid_end + 1 + plain[odcid_end]]
        if retry_scid != dcid:  # RFC 9000 §17.2.5.2: sent to the Retry's SCID
            raise InvalidToken("Retry token used with another connection ID")
        if not -1.0 <= now - issued <= self.lifetime:
            raise InvalidToken("Retry token expired")
        return odcid


# ---------------------------------------------------------------------------------------------
# The TLS engine aioquic talks to.


def _aioquic_alert(error: AlertError) -> tls.Alert:
    alert = tls.Alert(str(error))
    try:
        alert.description = tls.AlertDescription(int(error.description))
    except ValueError:
        alert.description = tls.AlertDescription.internal_error
    return alert


def check_quic_client_hello(config: ServerConfig, hello: ClientHello) -> None:
    """What QUIC adds to a ClientHello's rules; raises QuicConnectionError or AlertError.

    Among them an ALPN protocol in common, which QUIC requires (RFC 9001 §8.1)."""
    if hello.legacy_session_id:
        raise QuicConnectionError(
            error_code=QuicErrorCode.PROTOCOL_VIOLATION,
            frame_type=QuicFrameType.CRYPTO,
            reason_phrase="ClientHello has a non-empty legacy_session_id (RFC 9001 §8.4)",
        )
    if not any(t == ExtensionType.quic_transport_parameters for t, _ in hello.extensions):
        raise MissingExtension("no quic_transport_parameters extension (RFC 9001 §8.2)")
    select_alpn(config, hello)


class QuicTLS(tls.Context):
    """stateless13's ``ServerHandshake`` behind the interface ``QuicConnection`` expects.

    ``verified``: the front already opened ClientHello2's cookie (the stateless HRR went out
    before the connection existed); the first ClientHello here must be that very message.
    ``None``: an ordinary handshake, with a stateful HRR only when the key shares do not fit.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        peer: tuple[str, int],
        verified: CookieVerified | None,
    ) -> None:
        super().__init__(is_client=False)
        self.config = config
        self.peer = peer
        self.verified = verified
        self.handshake: ServerHandshake | None = None
        #: Set by the connection before each call: the epoch of the CRYPTO data passed in.
        self.receive_epoch = tls.Epoch.INITIAL
        self.summary: HandshakeSummary | None = None
        self.error: AlertError | None = None
        self.client_random = b""
        self.legacy_session_id = b""
        self._hello = bytearray()

    def handle_message(self, input_data: bytes, output_buf: dict[tls.Epoch, Buffer]) -> None:
        try:
            actions = self._receive(Epoch(self.receive_epoch.value), bytes(input_data))
        except AlertError as error:
            self.error = error
            raise _aioquic_alert(error) from error
        except TLSError as error:  # LocalProtocolError: a bug on our side, not the peer's
            raise tls.AlertInternalError(str(error)) from error
        self._apply(actions, output_buf)

    def _receive(self, epoch: Epoch, data: bytes) -> list[Action]:
        if self.handshake is not None:
            if epoch == Epoch.ONE_RTT:
                raise UnexpectedMessage("TLS message after the handshake (RFC 9001 §6)")
            return self.handshake.receive(epoch, data)
        if epoch != Epoch.INITIAL:
            raise UnexpectedMessage("handshake data before the ClientHello")
        self._hello += data
        size = client_hello_size(self._hello, self.config.max_client_hello_size)
        if size is None or len(self._hello) < size:
            return []
        if len(self._hello) > size:
            raise UnexpectedMessage("handshake data after the ClientHello")
        message = bytes(self._hello)
        self._hello.clear()
        hello = parse_client_hello(message, self.config.max_client_hello_size)
        self.client_random = hello.random
        self.legacy_session_id = hello.legacy_session_id
        self.received_extensions = [(t, d) for t, d in hello.extensions]
        check_quic_client_hello(self.config, hello)
        if self.alpn_cb is not None:  # parses the transport parameters; may set ours anew
            self.alpn_cb(select_alpn(self.config, hello).decode("ascii", "replace"))
        extensions = tuple((int(t), bytes(d)) for t, d in self.handshake_extensions)
        if self.verified is not None:
            if message != self.verified.message:  # the front opened this one's cookie, once
                raise IllegalParameter("ClientHello2 is not the one whose cookie was opened")
            self.handshake = ServerHandshake.resume_from_cookie(
                self.config, self.verified, peer=self.peer, encrypted_extensions=extensions
            )
            return self.handshake.take_actions()
        self.handshake = ServerHandshake(
            self.config, peer=self.peer, encrypted_extensions=extensions
        )
        return self.handshake.receive(Epoch.INITIAL, message)

    def _apply(self, actions: list[Action], output_buf: dict[tls.Epoch, Buffer]) -> None:
        for action in actions:
            if isinstance(action, SendHandshake):
                output_buf[tls.Epoch(action.epoch.value)].push_bytes(action.data)
            elif isinstance(action, InstallSecret):
                self.update_traffic_key_cb(
                    tls.Direction(action.direction.value),
                    tls.Epoch(action.epoch.value),
                    tls.CipherSuite(int(action.suite.code)),
                    action.secret,
                )
            elif isinstance(action, HandshakeDone):
                self.summary = action.summary
                self.state = tls.State.SERVER_POST_HANDSHAKE
            # SendChangeCipherSpec: never asked for, as the session id is empty (QUIC has none).
        handshake = self.handshake
        if handshake is not None and handshake.summary is not None:
            summary = handshake.summary
            if summary.alpn_protocol is not None:
                self.alpn_negotiated = summary.alpn_protocol.decode("ascii", "replace")
            if self.state == tls.State.SERVER_EXPECT_CLIENT_HELLO:
                self.state = tls.State.SERVER_EXPECT_FINISHED


# ---------------------------------------------------------------------------------------------
# The connection.


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a connection built from ClientHello2 picks up after the stateless HRR."""

    client_crypto_offset: int  # len(ClientHello1)
    server_crypto_offset: int  # len(HRR)
    next_packet_number: int
    cookie: CookieVerified  # ClientHello2 and its opened cookie: the handshake resumes from it


@dataclass(frozen=True, slots=True)
class ConnectionStart:
    """Everything the front learned that a new connection needs (and nothing kept elsewhere)."""

    key_cid: bytes  # the client's Initial keys derive from it
    host_cid: bytes  # our CID: initial_source_connection_id
    original_dcid: bytes
    retry_scid: bytes | None
    resume: ResumePoint | None  # None: an ordinary handshake on a fresh CRYPTO stream
    address_validated: bool
    validation: str  # "cookie", "retry", "retry+cookie" or "none": for reports
    datagrams: tuple[bytes, ...]  # to feed the connection, in order
    version: int


class StatelessQuicConnection(QuicConnection):
    """aioquic's QuicConnection with :class:`QuicTLS`, optionally resuming after a stateless HRR."""

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        server_config: ServerConfig,
        peer: tuple[str, int],
        start: ConnectionStart,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=start.original_dcid,
            retry_source_connection_id=start.retry_scid,
        )
        self.start = start
        self.peer = peer
        self.server_config = server_config
        self.quic_tls: QuicTLS | None = None
        # Our CID is the one the front chose (the HRR's SCID): initial_source_connection_id.
        self._host_cids[0].cid = start.host_cid
        self.host_cid = start.host_cid
        self._local_initial_source_connection_id = start.host_cid

    def _initialize(self, peer_cid: bytes) -> None:
        # Initial keys from the key CID: after a stateless HRR the client sends to our CID, but
        # keeps the keys of its original DCID (RFC 9001 §5.2).
        super()._initialize(self.start.key_cid)
        engine = QuicTLS(
            self.server_config,
            peer=self.peer,
            verified=None if self.start.resume is None else self.start.resume.cookie,
        )
        engine.handshake_extensions = self.tls.handshake_extensions  # our transport parameters
        engine.alpn_cb = self._alpn_handler
        engine.update_traffic_key_cb = self._update_traffic_key
        self.tls = engine
        self.quic_tls = engine
        resume = self.start.resume
        if resume is not None:
            stream = self._crypto_streams[tls.Epoch.INITIAL]
            stream.receiver._buffer_start = resume.client_crypto_offset
            stream.receiver.highest_offset = resume.client_crypto_offset
            stream.sender._buffer_start = resume.server_crypto_offset
            stream.sender._buffer_stop = resume.server_crypto_offset
            stream.sender.highest_offset = resume.server_crypto_offset
            self._packet_number = resume.next_packet_number
        if self.start.address_validated:
            for path in self._network_paths:
                path.is_validated = True

    def _handle_crypto_frame(
        self, context: QuicReceiveContext, frame_type: int, buf: Buffer
    ) -> None:
        if self.quic_tls is not None:
            self.quic_tls.receive_epoch = context.epoch
        super()._handle_crypto_frame(context, frame_type, buf)


# ---------------------------------------------------------------------------------------------
# The front: datagrams for unknown connection IDs.


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``datagram`` to the client and forget it."""

    datagram: bytes
    kind: str  # "hrr", "retry", "close", "version_negotiation"
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


@dataclass(slots=True)
class _Partial:
    created: float
    datagrams: list[bytes]
    size: int
    fragments: list[tuple[int, bytes]]
    packet_numbers: list[int]
    largest_acked: int


class ReassemblyTable:
    """Partial ClientHellos, bounded in entries, bytes and time (module docstring)."""

    def __init__(self, options: QuicOptions) -> None:
        self.options = options
        self._entries: dict[tuple[str, int, bytes], _Partial] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def pop(self, key: tuple[str, int, bytes]) -> _Partial | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
        return entry

    def take(self, key: tuple[str, int, bytes], now: float) -> _Partial | None:
        """Remove and return the entry for ``key`` unless it is past its lifetime."""
        self.expire(now)
        entry = self.pop(key)
        if entry is not None and entry.created <= now - self.options.reassembly_timeout:
            return None
        return entry

    def put(self, key: tuple[str, int, bytes], entry: _Partial) -> None:
        """Insert ``entry`` (taken out before it grew), evicting the oldest to make room."""
        self.pop(key)
        options = self.options
        while self._entries and (
            len(self._entries) >= options.reassembly_entries
            or self.bytes + entry.size > options.reassembly_bytes
        ):
            oldest = next(iter(self._entries))
            self.pop(oldest)
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += entry.size

    def expire(self, now: float) -> None:
        limit = now - self.options.reassembly_timeout
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.created > limit:
                break
            self.pop(key)


@dataclass(slots=True)
class _Initials:
    """What one datagram's Initial packets carried, once decrypted."""

    key_cid: bytes
    pair: CryptoPair
    packet_numbers: list[int]
    fragments: list[tuple[int, bytes]]
    largest_acked: int
    client_closed: bool = False


class _Malformed(Exception):
    pass


def _parse_frames(payload: bytes, into: _Initials) -> None:
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
            raise _Malformed(f"frame type 0x{frame_type:x} in an Initial packet")


def _contiguous(fragments: list[tuple[int, bytes]]) -> tuple[int, bytes]:
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


class InitialFront:
    """Answers datagrams for unknown connection IDs; keeps no per-client state but the table.

    ``receive`` returns what to do: :class:`Reply` (send it and forget), :class:`Accept` (create
    the connection), :class:`Pending` (part of a ClientHello is in the reassembly table) or
    :class:`Drop`.
    """

    def __init__(
        self,
        config: ServerConfig,
        options: QuicOptions | None = None,
        *,
        validation: Validation = "hrr",
    ) -> None:
        if validation not in VALIDATIONS:
            raise LocalProtocolError(f"validation must be one of {VALIDATIONS}")
        self.config = config
        self.options = options or QuicOptions()
        self.validation = validation
        self.cids = ConnectionIds(self.options.secret)
        self.tokens = RetryTokens(self.options.secret, self.options.retry_token_lifetime)
        self.table = ReassemblyTable(self.options)
        self.stats = FrontStats()

    # -- entry point ------------------------------------------------------------------------------

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
        if isinstance(result, Reply):
            self._count_reply(result)
        elif isinstance(result, Accept):
            self.stats.accepted += 1
        elif isinstance(result, Pending):
            self.stats.pending += 1
        else:
            self.stats.dropped += 1
        self.stats.reassembly_evictions = self.table.evictions
        return result

    def _count_reply(self, reply: Reply) -> None:
        self.stats.datagrams_out += 1
        self.stats.bytes_out += len(reply.datagram)
        if reply.kind == "hrr":
            self.stats.hrr_sent += 1
        elif reply.kind == "retry":
            self.stats.retry_sent += 1
        elif reply.kind == "close":
            self.stats.closes_sent += 1
        else:
            self.stats.version_negotiations_sent += 1

    def _receive(
        self, data: bytes, peer: tuple[str, int], now: float, header: QuicHeader | None
    ) -> FrontResult:
        if header is None:
            try:
                header = pull_quic_header(Buffer(data=data), host_cid_length=SERVER_CID_LENGTH)
            except (ValueError, BufferReadError):
                return Drop("unparsable header")
        if header.packet_type == QuicPacketType.VERSION_NEGOTIATION:
            return Drop("version negotiation packet")
        if header.version is None:
            return Drop("short header packet for an unknown connection ID")
        if len(data) < SMALLEST_MAX_DATAGRAM_SIZE:
            return Drop("datagram below 1200 bytes (RFC 9000 §14.1)")
        if header.version not in self.options.supported_versions:
            # RFC 9000 §6.1 (and only for datagrams of at least 1200 bytes: §5.2.2).
            return Reply(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=list(self.options.supported_versions),
                ),
                "version_negotiation",
            )
        if header.packet_type != QuicPacketType.INITIAL:
            return Drop("not an Initial packet")
        if len(header.destination_cid) < MIN_ORIGINAL_CID_LENGTH:
            return Drop("Destination Connection ID below 8 bytes (RFC 9000 §7.2)")

        original_dcid = header.destination_cid
        retry_scid: bytes | None = None
        if self.validation in ("retry", "both"):
            if not header.token:
                return self._retry(header, peer, now)
            try:
                original_dcid = self.tokens.open(header.token, peer, header.destination_cid, now)
            except InvalidToken as error:
                return self._close(
                    header,
                    key_cid=header.destination_cid,
                    error_code=QuicErrorCode.INVALID_TOKEN,
                    reason=str(error),
                    kind_reason="invalid Retry token",
                )
            retry_scid = header.destination_cid

        if self.validation in ("retry", "none"):
            initials = self._decrypt(data, header, (header.destination_cid,))
            if initials is None:
                return Drop("Initial does not decrypt")
            return Accept(
                ConnectionStart(
                    key_cid=header.destination_cid,
                    host_cid=os.urandom(SERVER_CID_LENGTH),
                    original_dcid=original_dcid,
                    retry_scid=retry_scid,
                    resume=None,
                    address_validated=retry_scid is not None,
                    validation="retry" if retry_scid is not None else "none",
                    datagrams=(data,),
                    version=header.version,
                )
            )
        return self._stateless(data, header, peer, now, original_dcid, retry_scid)

    # -- the stateless HRR path ---------------------------------------------------------------

    def _stateless(
        self,
        data: bytes,
        header: QuicHeader,
        peer: tuple[str, int],
        now: float,
        original_dcid: bytes,
        retry_scid: bytes | None,
    ) -> FrontResult:
        if retry_scid is not None:
            candidates: tuple[bytes, ...] = (retry_scid,)
        else:
            candidates = self.cids.key_candidates(header.destination_cid)
        initials = self._decrypt(data, header, candidates)
        if initials is None:
            return Drop("Initial does not decrypt")
        if initials.client_closed:
            self.table.pop((peer[0], peer[1], header.destination_cid))
            return Drop("the client closed")
        if not initials.fragments:
            return Drop("no CRYPTO data")
        if retry_scid is None:
            original_dcid = initials.key_cid  # no Retry: the keys come from the client's ODCID

        key = (peer[0], peer[1], header.destination_cid)
        entry = self.table.take(key, now)
        if entry is not None:
            entry.datagrams.append(data)
            entry.size += len(data)
            entry.fragments.extend(initials.fragments)
            entry.packet_numbers.extend(initials.packet_numbers)
            entry.largest_acked = max(entry.largest_acked, initials.largest_acked)
            fragments, datagrams = entry.fragments, tuple(entry.datagrams)
            packet_numbers, largest_acked = entry.packet_numbers, entry.largest_acked
        else:
            fragments, datagrams = initials.fragments, (data,)
            packet_numbers, largest_acked = initials.packet_numbers, initials.largest_acked

        max_hello = self.config.max_client_hello_size
        base, stream = _contiguous(fragments)
        if base > 2 * max_hello or any(o + len(d) > 3 * max_hello for o, d in fragments):
            return Drop("CRYPTO data beyond any ClientHello")
        try:
            size = client_hello_size(stream, max_hello)
        except AlertError as error:
            if base:  # a later fragment came first: ClientHello2's start may still come
                return self._hold(key, entry, now, data, initials)
            return self._close(header, key_cid=initials.key_cid, alert=error, pair=initials.pair)
        if size is None or len(stream) < size:
            return self._hold(key, entry, now, data, initials)

        message = stream[:size]
        try:
            hello = parse_client_hello(message, max_hello)
        except AlertError as error:
            if base:
                return Drop(f"unparsable ClientHello at offset {base}")
            return self._close(header, key_cid=initials.key_cid, alert=error, pair=initials.pair)
        packet_number = int(now * _HRR_PACKET_NUMBER_TICKS) % _HRR_PACKET_NUMBER_SPAN
        try:
            answer = answer_client_hello(
                self.config,
                message,
                hello=hello,
                peer=peer,
                now=now,
                cookie_payload=QuicCookieState(
                    original_dcid, retry_scid, packet_number, len(message)
                ).encode(),
                after_retry=base > 0,
                check=functools.partial(check_quic_client_hello, self.config),
            )
        except QuicConnectionError as error:
            return self._close(
                header,
                key_cid=initials.key_cid,
                error_code=error.error_code,
                reason=error.reason_phrase,
                pair=initials.pair,
            )
        except AlertError as error:
            return self._close(header, key_cid=initials.key_cid, alert=error, pair=initials.pair)
        if isinstance(answer, RetryRequest):
            return self._hello_retry(
                header,
                answer.hello_retry_request,
                initials,
                packet_number,
                packet_numbers,
                received=sum(len(d) for d in datagrams),
            )
        return self._resume(header, answer, base, initials, largest_acked, datagrams, retry_scid)

    def _hold(
        self,
        key: tuple[str, int, bytes],
        entry: _Partial | None,
        now: float,
        data: bytes,
        initials: _Initials,
    ) -> FrontResult:
        options = self.options
        if entry is None:
            entry = _Partial(
                created=now,
                datagrams=[data],
                size=len(data),
                fragments=list(initials.fragments),
                packet_numbers=list(initials.packet_numbers),
                largest_acked=initials.largest_acked,
            )
        if (
            entry.size > options.reassembly_entry_bytes
            or len(entry.datagrams) > options.reassembly_datagrams
        ):
            return Drop("partial ClientHello over the reassembly limits")
        self.table.put(key, entry)
        return Pending()

    def _hello_retry(
        self,
        header: QuicHeader,
        hello_retry_request: bytes,
        initials: _Initials,
        packet_number: int,
        packet_numbers: list[int],
        received: int,
    ) -> FrontResult:
        acks = RangeSet()
        for number in packet_numbers:
            acks.add(number)
        datagram = self._initial_datagram(
            header,
            key_cid=initials.key_cid,
            packet_number=packet_number,
            acks=acks,
            crypto=hello_retry_request,
            pair=initials.pair,
        )
        if len(datagram) > 3 * received:  # RFC 9000 §8.1 (cannot happen: >= 1200 received)
            return Drop("HRR would exceed 3x the bytes received")
        return Reply(datagram, "hrr")

    def _resume(
        self,
        header: QuicHeader,
        verified: CookieVerified,
        base: int,
        initials: _Initials,
        largest_acked: int,
        datagrams: tuple[bytes, ...],
        retry_scid: bytes | None,
    ) -> FrontResult:
        """ClientHello2's cookie is good for its IP (the core checked it): check the QUIC state
        it carries against this packet, and start the connection from it."""
        key_cid = initials.key_cid
        try:
            try:
                state = QuicCookieState.decode(verified.cookie_payload)
            except ValueError as error:
                raise DecryptError(f"cookie without QUIC state: {error}") from None
            if state.key_cid != key_cid or state.retry_scid != retry_scid:
                raise IllegalParameter("cookie issued for another connection ID")
            if state.client_hello_length != base:
                raise IllegalParameter("ClientHello2 does not follow ClientHello1 in CRYPTO")
        except AlertError as error:
            return self._close(header, key_cid=key_cid, alert=error, pair=initials.pair)
        return Accept(
            ConnectionStart(
                key_cid=key_cid,
                host_cid=header.destination_cid,
                original_dcid=state.original_dcid,
                retry_scid=state.retry_scid,
                resume=ResumePoint(
                    client_crypto_offset=base,
                    server_crypto_offset=len(verified.hello_retry_request),
                    next_packet_number=max(state.hrr_packet_number, largest_acked) + 1,
                    cookie=verified,
                ),
                address_validated=True,
                validation="retry+cookie" if state.retry_scid is not None else "cookie",
                datagrams=datagrams,
                version=header.version or QuicProtocolVersion.VERSION_1,
            )
        )

    # -- packets ------------------------------------------------------------------------------

    def _decrypt(
        self, data: bytes, header: QuicHeader, candidates: tuple[bytes, ...]
    ) -> _Initials | None:
        """Decrypt the datagram's Initial packets with the first candidate key CID that works."""
        assert header.version is not None
        for key_cid in candidates:
            pair = CryptoPair()
            pair.setup_initial(cid=key_cid, is_client=False, version=header.version)
            initials = _Initials(key_cid, pair, [], [], -1)
            try:
                if self._decrypt_with(data, pair, initials):
                    return initials
            except _Malformed:
                return None
        return None

    def _decrypt_with(self, data: bytes, pair: CryptoPair, into: _Initials) -> bool:
        buf = Buffer(data=data)
        decrypted = False
        for start, encrypted_offset, header in _packets(buf):
            if header.packet_type != QuicPacketType.INITIAL:
                continue  # coalesced 0-RTT (we never accept it) or garbage
            end = start + header.packet_length
            try:
                plain_header, payload, packet_number = pair.decrypt_packet(
                    data[start:end], encrypted_offset, 0
                )
            except (CryptoError, ValueError, IndexError):
                if not decrypted:
                    return False
                continue
            if plain_header[0] & 0x0C:
                raise _Malformed("reserved bits set")
            decrypted = True
            into.packet_numbers.append(packet_number)
            try:
                _parse_frames(payload, into)
            except (BufferReadError, ValueError) as error:
                raise _Malformed(str(error)) from None
        return decrypted

    def _initial_datagram(
        self,
        header: QuicHeader,
        *,
        key_cid: bytes,
        packet_number: int,
        acks: RangeSet | None = None,
        crypto: bytes | None = None,
        close: tuple[int, int, str] | None = None,
        pair: CryptoPair | None = None,
    ) -> bytes:
        """An Initial from us; ``pair``: the keys for ``key_cid`` if already derived."""
        assert header.version is not None
        if pair is None:
            pair = CryptoPair()
            pair.setup_initial(cid=key_cid, is_client=False, version=header.version)
        builder = QuicPacketBuilder(
            host_cid=self.cids.encode(key_cid),
            peer_cid=header.source_cid,
            version=header.version,
            is_client=False,
            max_datagram_size=SMALLEST_MAX_DATAGRAM_SIZE,
            packet_number=packet_number,
        )
        builder.start_packet(QuicPacketType.INITIAL, pair)
        if acks is not None and len(acks):
            buf = builder.start_frame(QuicFrameType.ACK, capacity=_ACK_FRAME_CAPACITY)
            _push_ack_frame(buf, acks)
        if crypto is not None:
            buf = builder.start_frame(
                QuicFrameType.CRYPTO, capacity=_CRYPTO_FRAME_OVERHEAD + len(crypto)
            )
            buf.push_uint_var(0)
            buf.push_uint16(len(crypto) | 0x4000)
            buf.push_bytes(crypto)
        if close is not None:
            error_code, frame_type, reason = close
            phrase = reason.encode("utf-8", "replace")[:200]
            buf = builder.start_frame(
                QuicFrameType.TRANSPORT_CLOSE, capacity=_CLOSE_FRAME_CAPACITY + len(phrase)
            )
            buf.push_uint_var(error_code)
            buf.push_uint_var(frame_type)
            buf.push_uint_var(len(phrase))
            buf.push_bytes(phrase)
        datagrams, _packets_sent = builder.flush()
        assert len(datagrams) == 1
        return datagrams[0]

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
        return Reply(packet, "retry")

    def _close(
        self,
        header: QuicHeader,
        *,
        key_cid: bytes,
        alert: AlertError | None = None,
        error_code: int = QuicErrorCode.PROTOCOL_VIOLATION,
        reason: str = "",
        kind_reason: str = "",
        pair: CryptoPair | None = None,
    ) -> Reply:
        """An Initial with CONNECTION_CLOSE: small, not ack-eliciting, so never padded."""
        frame_type = QuicFrameType.CRYPTO
        if alert is not None:
            error_code = QuicErrorCode.CRYPTO_ERROR + int(alert.description)
            reason = str(alert)
        elif error_code == QuicErrorCode.INVALID_TOKEN:
            frame_type = QuicFrameType.PADDING
        datagram = self._initial_datagram(
            header,
            key_cid=key_cid,
            packet_number=0,
            close=(error_code, frame_type, reason),
            pair=pair,
        )
        return Reply(datagram, "close", kind_reason or reason)


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


def _packets(buf: Buffer) -> Iterator[tuple[int, int, QuicHeader]]:
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


__all__ = [
    "SERVER_CID_LENGTH",
    "VALIDATIONS",
    "Accept",
    "ConnectionIds",
    "ConnectionStart",
    "Drop",
    "FrontResult",
    "FrontStats",
    "InitialFront",
    "Pending",
    "QuicCookieState",
    "QuicOptions",
    "QuicTLS",
    "ReassemblyTable",
    "Reply",
    "ResumePoint",
    "RetryTokens",
    "StatelessQuicConnection",
    "Validation",
    "quic_configuration",
]
