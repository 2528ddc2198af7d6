"""What a stateless QUIC server gives the client to carry: connection IDs, cookie state, tokens.

Our connection IDs encode the client's key CID, the cookie's application payload carries the rest
of the connection (:class:`QuicCookieState`), a Retry token carries the original DCID, a
NEW_TOKEN token (:class:`AddressTokens`) the time a client completed a handshake from its IP
address, and a session ticket the transport parameters its 0-RTT may rely on
(:class:`ZeroRttParameters`).  The design is in docs/QUIC.md.
"""

from __future__ import annotations

import dataclasses
import hmac
import struct
from dataclasses import dataclass

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.packet import pull_quic_transport_parameters

from stateless13 import CookieKeyRing, DecryptError, LocalProtocolError, peer_binding

#: Every connection ID we issue is this long (aioquic parses short headers by it).
SERVER_CID_LENGTH = 20
#: RFC 9000 §7.2: a client's first Destination Connection ID is at least 8 bytes.
MIN_ORIGINAL_CID_LENGTH = 8
#: Our bytes among the key ring's token kinds: a Retry packet's token and a NEW_TOKEN frame's,
#: which RFC 9000 §8.1.1 requires the server to tell apart (a session ticket is 0x10,
#: stateless13.ticket.TICKET_TOKEN_KIND).
RETRY_TOKEN_KIND = 1
NEW_TOKEN_KIND = 2
#: The first byte of every token ``CookieKeyRing.seal_token`` makes (stateless13/cookie.py:
#: version 2 | kind | key_id | nonce | sealed payload); the kind byte follows it.
_SEALED_TOKEN_VERSION = 2
_CID_HALF = SERVER_CID_LENGTH // 2
_FEISTEL_ROUNDS = 4


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


class ConnectionIds:
    """Our 20-byte connection IDs that encode the client's key CID (docs/QUIC.md).

    ``secret``: ``QuicOptions.secret``; a fleet shares it so that any server decodes them."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.digest(secret, b"stateless13 quic cid v1", "sha256")

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


class StaleRetryToken(InvalidToken):
    """A Retry token of ours for this IP address, but from another connection attempt: the
    Initial is not sent to that Retry's SCID, so this client got no Retry this time and kept an
    old token (RFC 9000 §8.1.3 forbids it).  Ignored, not refused: the client may take a Retry."""


def token_kind(token: bytes) -> int | None:
    """The kind a token of the key ring says it is, before anything is opened (None: not one
    of the ring's tokens).  In the clear, as RFC 9000 §8.1.3 allows for telling a Retry's token
    from a NEW_TOKEN one; the kind is in the associated data, so opening checks it again."""
    if len(token) < 2 or token[0] != _SEALED_TOKEN_VERSION:
        return None
    return token[1]


#: issued_at in milliseconds, then the ODCID and the Retry's SCID, each after its length byte.
_ISSUED_AT = struct.Struct(">Q")


class RetryTokens:
    """Stateless Retry tokens, sealed by the cookie key ring (so they rotate with it).

    Payload: (issued_at, ODCID, Retry SCID); the ring binds it to the client's IP address and to
    :data:`RETRY_TOKEN_KIND`, so it never opens as a cookie (nor a cookie as a token)."""

    def __init__(self, keys: CookieKeyRing, lifetime: float) -> None:
        self.keys = keys
        self.lifetime = lifetime

    def seal(self, peer: tuple[str, int], odcid: bytes, retry_scid: bytes, now: float) -> bytes:
        payload = _ISSUED_AT.pack(int(now * 1000))
        payload += bytes((len(odcid),)) + odcid + bytes((len(retry_scid),)) + retry_scid
        return self.keys.seal_token(RETRY_TOKEN_KIND, payload, peer_binding(peer))

    def open(self, token: bytes, peer: tuple[str, int], dcid: bytes, now: float) -> bytes:
        """The ODCID, if the token is ours, for this IP, for ``dcid`` and fresh."""
        try:
            payload = self.keys.open_token(RETRY_TOKEN_KIND, token, peer_binding(peer))
        except DecryptError as error:
            raise InvalidToken(f"Retry token refused: {error.reason}") from None
        (issued_ms,) = _ISSUED_AT.unpack_from(payload)
        odcid_end = _ISSUED_AT.size + 1 + payload[_ISSUED_AT.size]
        odcid = payload[_ISSUED_AT.size + 1 : odcid_end]
        retry_scid = payload[odcid_end + 1 : odcid_end + 1 + payload[odcid_end]]
        if retry_scid != dcid:  # RFC 9000 §17.2.5.2: sent to the Retry's SCID
            raise StaleRetryToken("Retry token used with another connection ID")
        if not -1.0 <= now - issued_ms / 1000 <= self.lifetime:
            raise InvalidToken("Retry token expired")
        return odcid


#: NEW_TOKEN plaintext: format u8, issued_at u64 in milliseconds since the epoch.
_ADDRESS_TOKEN = struct.Struct(">BQ")


class AddressTokens:
    """NEW_TOKEN tokens (RFC 9000 §8.1.3): proof that a client completed a handshake from its IP
    address, which lets its next connections skip the HRR or the Retry.

    Sealed by the cookie key ring (so they rotate with it) as :data:`NEW_TOKEN_KIND`, bound to the
    client's IP address, not its port (a client's next connection comes from another port, RFC
    9000 §8.1.3); the plaintext is only the format and the issue time, so a token says nothing an
    observer could link to the connection that issued it (and every token is unique: the ring
    draws a random nonce for each).  ``lifetime``: seconds a token is honoured from its issue;
    ``clock_skew``: how far in the future its issue time may be (servers of a fleet)."""

    FORMAT = 1

    def __init__(self, keys: CookieKeyRing, lifetime: float, clock_skew: float = 5.0) -> None:
        self.keys = keys
        self.lifetime = lifetime
        self.clock_skew = clock_skew

    def seal(self, peer: tuple[str, int], now: float) -> bytes:
        payload = _ADDRESS_TOKEN.pack(self.FORMAT, int(now * 1000))
        return self.keys.seal_token(NEW_TOKEN_KIND, payload, peer_binding(peer))

    def open(self, token: bytes, peer: tuple[str, int], now: float) -> float:
        """When the token was issued, if it is ours, for this IP address and within its
        lifetime; InvalidToken otherwise."""
        try:
            payload = self.keys.open_token(NEW_TOKEN_KIND, token, peer_binding(peer))
        except DecryptError as error:
            raise InvalidToken(f"NEW_TOKEN token ignored: {error.reason}") from None
        if len(payload) != _ADDRESS_TOKEN.size or payload[0] != self.FORMAT:
            raise InvalidToken("NEW_TOKEN token ignored: unknown format")
        _, issued_ms = _ADDRESS_TOKEN.unpack(payload)
        issued_at: float = issued_ms / 1000
        age = now - issued_at
        if age > self.lifetime:
            raise InvalidToken(f"NEW_TOKEN token ignored: expired {age - self.lifetime:.0f}s ago")
        if age < -self.clock_skew:
            raise InvalidToken(f"NEW_TOKEN token ignored: issued {-age:.0f}s in the future")
        return issued_at


@dataclass(frozen=True, slots=True)
class ZeroRttParameters:
    """Our transport parameters that a client's 0-RTT data may rely on: the limits RFC 9000
    §7.4.1 names, and max_datagram_frame_size (RFC 9221 §3).

    A connection's own go into every ticket it issues (the core seals them as the ticket's early
    data context); when a client resumes one with 0-RTT, its early data is accepted only if none
    of the new connection's is lower (a server whose flow control shrank since would see the
    client break it).  Absent parameters count as their defaults (RFC 9000 §18.2)."""

    active_connection_id_limit: int
    initial_max_data: int
    initial_max_stream_data_bidi_local: int
    initial_max_stream_data_bidi_remote: int
    initial_max_stream_data_uni: int
    initial_max_streams_bidi: int
    initial_max_streams_uni: int
    max_datagram_frame_size: int

    FORMAT = 1

    @classmethod
    def of(cls, encoded: bytes) -> ZeroRttParameters:
        """Those of a quic_transport_parameters extension's body (ours)."""
        parameters = pull_quic_transport_parameters(Buffer(data=encoded))
        limit = parameters.active_connection_id_limit
        return cls(
            active_connection_id_limit=2 if limit is None else limit,
            initial_max_data=parameters.initial_max_data or 0,
            initial_max_stream_data_bidi_local=parameters.initial_max_stream_data_bidi_local or 0,
            initial_max_stream_data_bidi_remote=parameters.initial_max_stream_data_bidi_remote or 0,
            initial_max_stream_data_uni=parameters.initial_max_stream_data_uni or 0,
            initial_max_streams_bidi=parameters.initial_max_streams_bidi or 0,
            initial_max_streams_uni=parameters.initial_max_streams_uni or 0,
            max_datagram_frame_size=parameters.max_datagram_frame_size or 0,
        )

    def encode(self) -> bytes:
        """A format byte, then each value as a QUIC varint, in the order of the fields."""
        values = dataclasses.astuple(self)
        buf = Buffer(capacity=1 + 8 * len(values))
        buf.push_uint8(self.FORMAT)
        for value in values:
            buf.push_uint_var(value)
        return buf.data

    @classmethod
    def decode(cls, data: bytes) -> ZeroRttParameters:
        """Raises ValueError for bytes :meth:`encode` did not write (a TCP ticket's are empty)."""
        buf = Buffer(data=data)
        try:
            if buf.pull_uint8() != cls.FORMAT:
                raise ValueError("not remembered QUIC transport parameters")
            values = [buf.pull_uint_var() for _ in dataclasses.fields(cls)]
        except BufferReadError:
            raise ValueError("remembered QUIC transport parameters truncated") from None
        if not buf.eof():
            raise ValueError("remembered QUIC transport parameters too long")
        return cls(*values)

    def admits(self, remembered: bytes) -> bool:
        """Whether 0-RTT relying on ``remembered`` (a ticket's early data context) fits these:
        none of ours is lower (RFC 9000 §7.4.1).  Anything we did not encode: no."""
        try:
            then = dataclasses.astuple(self.decode(remembered))
        except ValueError:
            return False
        return all(
            now >= before for now, before in zip(dataclasses.astuple(self), then, strict=True)
        )
