"""What a stateless QUIC server gives the client to carry: connection IDs, cookie state, tokens.

Our connection IDs encode the client's key CID, the cookie's application payload carries the rest
of the connection (:class:`QuicCookieState`), and a Retry token carries the original DCID.  The
design is in docs/QUIC.md.
"""

from __future__ import annotations

import hmac
import struct
from dataclasses import dataclass

from stateless13 import CookieKeyRing, DecryptError, LocalProtocolError, peer_binding

#: Every connection ID we issue is this long (aioquic parses short headers by it).
SERVER_CID_LENGTH = 20
#: RFC 9000 §7.2: a client's first Destination Connection ID is at least 8 bytes.
MIN_ORIGINAL_CID_LENGTH = 8
#: Our byte among the key ring's token kinds (a NEW_TOKEN token would take another).
RETRY_TOKEN_KIND = 1
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
            raise InvalidToken("Retry token used with another connection ID")
        if not -1.0 <= now - issued_ms / 1000 <= self.lifetime:
            raise InvalidToken("Retry token expired")
        return odcid
