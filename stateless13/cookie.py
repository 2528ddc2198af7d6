"""The HelloRetryRequest cookie: everything a stateless server must remember, sealed for the client.

Wire format (version 1): 105 bytes for SHA-256 suites, 121 for SHA-384, plus the app payload
(16 fewer over DTLS, below):

    version (1) | key_id (1) | nonce (12) | AES-256-GCM-SIV(plaintext) incl. 16-byte tag

    plaintext = issued_at u32 | cipher_suite u16 | group u16 | flags u8 | hash length u8
              | Hash(ClientHello1) (32 or 48, by the suite's hash)
              | client_hello_digest (32, or its first 16) | app_payload <0..64>

A DTLS cookie keeps the first 16 bytes of the digest (flag 0x02): a datagram server's HRR must
not be larger than the ClientHello it answers (anti-amplification, RFC 9147 §5.1), and the
smallest DTLS 1.3 ClientHellos are about 180 bytes.  128 bits sealed inside the AEAD still take
a second preimage to forge a matching ClientHello2.

    associated data = version | key_id | the peer's IP address (packed)

GCM-SIV keeps a random 96-bit nonce safe far beyond AES-GCM's 2^32 messages per key.  The key
id is derived from the key itself, so every process that loads the same key bytes agrees on it
without any configuration.  The first key of a :class:`CookieKeyRing` seals; all of them open,
which is how keys rotate without rejecting cookies in flight.

The same ring seals a transport's own tokens (a QUIC Retry token), so that one set of keys,
rotated once, covers both:

    version 2 (1) | kind (1) | key_id (1) | nonce (12) | AES-256-GCM-SIV(payload) incl. tag

    associated data = version 2 | kind | key_id | the peer's IP address (packed)

The version byte (2, where a cookie has 1) and the kind are both in the associated data, so a
token never opens as a cookie, a cookie never opens as a token, and a token of one kind never
opens as another.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .alerts import DecryptError, IllegalParameter, LocalProtocolError

COOKIE_FORMAT_VERSION = 1
TOKEN_FORMAT_VERSION = 2
MAX_APP_PAYLOAD = 64
MIN_KEY_SIZE = 16
_NONCE_SIZE = 12
_HEADER_SIZE = 2 + _NONCE_SIZE
_TOKEN_HEADER_SIZE = 3 + _NONCE_SIZE
_TAG_SIZE = 16
_FLAG_KEY_SHARE_REQUESTED = 0x01
_FLAG_SHORT_DIGEST = 0x02
_DIGEST_SIZE = 32
SHORT_DIGEST_SIZE = 16


@dataclass(slots=True)  # not frozen: built for every HelloRetryRequest, and never shared
class CookieState:
    """What the server needs from ClientHello1 to finish the handshake from ClientHello2."""

    issued_at: int  # seconds since the epoch, as given to stateless_accept
    cipher_suite: int
    group: int
    key_share_requested: bool  # did the HRR carry a key_share? (needed to rebuild it byte for byte)
    client_hello_hash: bytes  # Hash(ClientHello1) under the suite's hash: the transcript's start
    #: SHA-256 of the fields ClientHello2 must repeat (negotiation.py), or its first 16 bytes.
    client_hello_digest: bytes
    app_payload: bytes = b""  # the application's own bytes, returned with Accepted


#: issued_at u32 | cipher_suite u16 | group u16 | flags u8 | hash length u8 (the format above).
_STATE_HEADER = struct.Struct(">IHHBB")


def encode_cookie_state(state: CookieState) -> bytes:
    if len(state.app_payload) > MAX_APP_PAYLOAD:
        raise LocalProtocolError(f"cookie payload over {MAX_APP_PAYLOAD} bytes")
    flags = _FLAG_KEY_SHARE_REQUESTED if state.key_share_requested else 0
    if len(state.client_hello_digest) == SHORT_DIGEST_SIZE:
        flags |= _FLAG_SHORT_DIGEST
    elif len(state.client_hello_digest) != _DIGEST_SIZE:
        raise LocalProtocolError("client_hello_digest: 32 bytes, or the first 16 of them")
    return b"".join(
        (
            _STATE_HEADER.pack(
                state.issued_at,
                state.cipher_suite,
                state.group,
                flags,
                len(state.client_hello_hash),
            ),
            state.client_hello_hash,
            state.client_hello_digest,
            bytes((len(state.app_payload),)),
            state.app_payload,
        )
    )


def decode_cookie_state(data: bytes) -> CookieState:
    # Only ever called on authenticated plaintext we wrote, but still bounds-checked.
    if len(data) < _STATE_HEADER.size:
        raise DecryptError("cookie plaintext too short")
    issued_at, suite, group, flags, hash_len = _STATE_HEADER.unpack_from(data)
    start = _STATE_HEADER.size
    digest_end = (
        start + hash_len + (SHORT_DIGEST_SIZE if flags & _FLAG_SHORT_DIGEST else _DIGEST_SIZE)
    )
    if hash_len not in (32, 48) or len(data) < digest_end + 1:
        raise DecryptError("cookie plaintext malformed")
    payload_len = data[digest_end]
    if len(data) != digest_end + 1 + payload_len:
        raise DecryptError("cookie plaintext malformed")
    return CookieState(
        issued_at=issued_at,
        cipher_suite=suite,
        group=group,
        key_share_requested=bool(flags & _FLAG_KEY_SHARE_REQUESTED),
        client_hello_hash=data[start : start + hash_len],
        client_hello_digest=data[start + hash_len : digest_end],
        app_payload=data[digest_end + 1 :],
    )


def peer_binding(peer: tuple[str, int] | None) -> bytes:
    """The associated data that binds a cookie to the client's IP address.

    Only the address is bound, not the port: a NAT may rebind the port between ClientHellos on
    QUIC, while on TCP the second ClientHello arrives on the same connection anyway.
    """
    if peer is None:
        return b""
    host = peer[0].split("%", 1)[0]  # an IPv6 zone id is local; the address is what counts
    try:  # an IPv6 address always holds a colon and an IPv4 one never does
        return socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return host.encode("utf-8", "surrogateescape")  # not an IP: e.g. a QUIC path id or a name


class _CookieKey:
    __slots__ = ("aead", "header", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_KEY_SIZE:
            raise LocalProtocolError(f"cookie keys must be at least {MIN_KEY_SIZE} bytes")
        material = HKDF(hashes.SHA256(), 33, salt=None, info=b"stateless13 cookie key v1").derive(
            secret
        )
        self.key_id = material[0]
        self.aead = AESGCMSIV(material[1:])
        self.header = bytes((COOKIE_FORMAT_VERSION, self.key_id))  # what starts its cookies


class CookieKeyRing:
    """The keys that seal and open cookies (and tokens): ``keys[0]`` seals, every key opens.

    Share a ring between processes or machines by giving each the same key bytes (e.g. the same
    key file); rotate by putting a new key first and keeping the old one until its cookies expire.
    A running server rotates without a restart: :meth:`replace_keys` swaps the keys in place.
    """

    def __init__(self, keys: Sequence[bytes]) -> None:
        # One tuple, the sealing key first: swapped whole by replace_keys, so a reader on another
        # thread sees the old keys or the new ones, never a mix.
        self._keys = _make_keys(keys)

    @classmethod
    def generate(cls) -> CookieKeyRing:
        """A ring with one fresh random key (cookies then live only as long as this process)."""
        return cls([os.urandom(32)])

    @classmethod
    def from_bytes(cls, *keys: bytes) -> CookieKeyRing:
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CookieKeyRing:
        """Load hex keys, one per line, newest (sealing) first; ``#`` starts a comment."""
        return cls(_parse_hex_keys(Path(path).read_text().splitlines(), str(path)))

    @classmethod
    def from_env(cls, variable: str = "STATELESS13_COOKIE_KEYS") -> CookieKeyRing:
        """Load hex keys from an environment variable: newest first, separated by commas."""
        value = os.environ.get(variable)
        if not value:
            raise LocalProtocolError(f"environment variable {variable} is not set")
        return cls(_parse_hex_keys(value.split(","), f"${variable}"))

    @staticmethod
    def write_new_key_file(path: str | os.PathLike[str]) -> None:
        """Create a key file with one random key, readable by its owner only."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write("# stateless13 keys: newest first, hex, one per line\n")
            file.write(os.urandom(32).hex() + "\n")

    def replace_keys(self, other: CookieKeyRing) -> None:
        """From now on, seal and open with ``other``'s keys (e.g. ``CookieKeyRing.from_file``
        read again): in place, so that every holder of this ring (a ``ServerConfig``, a QUIC
        server's tokens) sees the change at once.  One assignment: safe while other threads or
        tasks seal and open; what was read and checked before (a file that does not parse)
        never reaches the ring, which then keeps its keys."""
        self._keys = other._keys

    @property
    def key_ids(self) -> tuple[int, ...]:
        """The keys' ids, the sealing key's first: servers that print the same ids hold the same
        keys (an id is derived from its key and is in every cookie in clear; no secret)."""
        return tuple(key.key_id for key in self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def seal(self, state: CookieState, peer: bytes, nonce: bytes | None = None) -> bytes:
        key = self._keys[0]
        header = key.header
        nonce = os.urandom(_NONCE_SIZE) if nonce is None else nonce
        sealed = key.aead.encrypt(nonce, encode_cookie_state(state), header + peer)
        return header + nonce + sealed

    def open(self, cookie: bytes, peer: bytes) -> CookieState:
        """Authenticate and decrypt; DecryptError for anything we did not seal for this peer."""
        if len(cookie) < _HEADER_SIZE + _TAG_SIZE:
            raise DecryptError("cookie truncated")
        if cookie[0] != COOKIE_FORMAT_VERSION:
            raise DecryptError(f"unknown cookie format version {cookie[0]}")
        header, nonce, sealed = cookie[:2], cookie[2:_HEADER_SIZE], cookie[_HEADER_SIZE:]
        return decode_cookie_state(self._open("cookie", cookie[1], nonce, sealed, header + peer))

    def seal_token(
        self, kind: int, payload: bytes, peer: bytes, nonce: bytes | None = None
    ) -> bytes:
        """Seal a transport's ``payload`` for ``peer`` as a token of ``kind`` (its own byte)."""
        if not 0 <= kind <= 0xFF:
            raise LocalProtocolError("a token kind is one byte")
        key = self._keys[0]
        header = bytes((TOKEN_FORMAT_VERSION, kind, key.key_id))
        nonce = os.urandom(_NONCE_SIZE) if nonce is None else nonce
        return header + nonce + key.aead.encrypt(nonce, payload, header + peer)

    def open_token(self, kind: int, token: bytes, peer: bytes) -> bytes:
        """The payload of a ``kind`` token sealed for ``peer``; DecryptError for anything else."""
        if len(token) < _TOKEN_HEADER_SIZE + _TAG_SIZE:
            raise DecryptError("token truncated")
        if token[0] != TOKEN_FORMAT_VERSION or token[1] != kind:
            raise DecryptError(f"not a token of kind {kind}")
        header, nonce, sealed = token[:3], token[3:_TOKEN_HEADER_SIZE], token[_TOKEN_HEADER_SIZE:]
        return self._open("token", token[2], nonce, sealed, header + peer)

    def _open(
        self, what: str, key_id: int, nonce: bytes, sealed: bytes, associated: bytes
    ) -> bytes:
        candidates = [k for k in self._keys if k.key_id == key_id]
        if not candidates:
            raise DecryptError(f"{what} sealed under unknown key id {key_id}")
        for key in candidates:  # more than one only on a 1-in-256 key id collision
            try:
                return key.aead.decrypt(nonce, sealed, associated)
            except InvalidTag:
                continue
        raise DecryptError(f"{what} does not authenticate (tampered, or for another address)")


def _make_keys(keys: Sequence[bytes]) -> tuple[_CookieKey, ...]:
    if not keys:
        raise LocalProtocolError("a CookieKeyRing needs at least one key")
    return tuple(_CookieKey(bytes(k)) for k in keys)


def _parse_hex_keys(lines: list[str], source: str) -> list[bytes]:
    keys = []
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            keys.append(bytes.fromhex(line))
        except ValueError:
            raise LocalProtocolError(f"{source}:{number}: not a hex key") from None
    return keys


def check_cookie_age(state: CookieState, now: float, lifetime: float, clock_skew: float) -> None:
    """Expired and future-dated cookies: illegal_parameter (the cookie is authentic but stale)."""
    age = now - state.issued_at
    if age > lifetime:
        raise IllegalParameter(f"cookie expired {age - lifetime:.0f}s ago")
    if age < -clock_skew:
        raise IllegalParameter(f"cookie issued {-age:.0f}s in the future")
