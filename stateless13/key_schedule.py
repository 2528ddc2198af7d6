"""The TLS 1.3 key schedule (RFC 8446 §7), one function per formula.

Without a PSK the early secret is HKDF-Extract(0, 0), the same for every handshake of a hash: its
"derived" salt is keyed once per suite.  With one (a resumed ticket) it is HKDF-Extract(0, PSK).

HKDF (RFC 5869) is written here over HMAC (RFC 2104) built from hashlib's hash objects, not taken
from ``cryptography``'s HKDF or the ``hmac`` module: each of those keys a new HMAC and looks its
digest up in OpenSSL on every call, and a handshake makes about twenty such calls, most of them
several under one secret (c/s hs traffic; key and iv; c/s ap traffic and exp master).  Keyed once,
an HMAC here costs two copies of a hash state: the key schedule of a handshake went from 44 to
38 us compiled (docs/BENCHMARKS.md §11).  tests/memory/test_key_schedule.py checks both against
``hmac`` and ``cryptography``'s HKDF; the RFC 8448 traces check the schedule.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import IntEnum

from .primitives import SuiteParams


class Epoch(IntEnum):
    """Key epochs (the secrets in use), numbered as QUIC and aioquic number them."""

    INITIAL = 0
    ZERO_RTT = 1
    HANDSHAKE = 2
    ONE_RTT = 3


class Direction(IntEnum):
    """Which way a traffic secret protects: what we receive, or what we send."""

    DECRYPT = 0
    ENCRYPT = 1


class KeyedHmac:
    """HMAC(key, message) for one key: the inner and outer hash states after the padded key,
    copied for each message.  Holds key material: never logged, never kept past its use."""

    __slots__ = ("_inner", "_outer", "digest_size", "label_prefix")

    def __init__(self, suite: SuiteParams, key: bytes) -> None:
        self.digest_size = suite.hash_len
        self.label_prefix = suite.label_prefix
        if len(key) > suite.hash_block_size:
            key = suite.digest(key)
        # The key XORed with the pads as an integer (a table, as bytes.translate, would index
        # memory by key bytes); the key's zero padding XORed with a pad is the pad itself.
        size = len(key)
        value = int.from_bytes(key, "big")
        tail = suite.hash_block_size - size
        self._inner = suite.new_hash((value ^ _IPAD[size]).to_bytes(size, "big") + _IPAD_TAIL[tail])
        self._outer = suite.new_hash((value ^ _OPAD[size]).to_bytes(size, "big") + _OPAD_TAIL[tail])

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


#: By key length (at most the largest block, 128): the pad as an integer, and as bytes.
_IPAD = [int.from_bytes(b"\x36" * size, "big") for size in range(129)]
_OPAD = [int.from_bytes(b"\x5c" * size, "big") for size in range(129)]
_IPAD_TAIL = [b"\x36" * size for size in range(129)]
_OPAD_TAIL = [b"\x5c" * size for size in range(129)]


def hkdf_extract(suite: SuiteParams, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2)."""
    return KeyedHmac(suite, salt).digest(ikm)


def expand_label(prk: KeyedHmac, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label (§7.1) under a keyed secret: HKDF-Expand (RFC 5869 §2.3) of
    HkdfLabel = length || "tls13 " + label || context ("dtls13" in DTLS 1.3)."""
    prefix = prk.label_prefix
    if not context and length <= prk.digest_size:  # key, iv, finished: one HMAC of a constant
        return prk.digest(_context_free_label(length, prefix, label))[:length]
    info = _hkdf_label_prefix(length, prefix, label) + bytes((len(context),)) + context
    block = prk.digest(info + b"\x01")
    if length > 255 * len(block):
        raise ValueError(f"HKDF-Expand gives at most {255 * len(block)} bytes, not {length}")
    output = block
    while len(output) < length:  # longer than the hash: only exporters ask for that
        block = prk.digest(block + info + bytes((len(output) // len(block) + 1,)))
        output += block
    return output[:length]


def hkdf_expand_label(
    suite: SuiteParams, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """HKDF-Expand-Label (§7.1) of one label under ``secret``."""
    return expand_label(KeyedHmac(suite, secret), label, context, length)


@functools.lru_cache(maxsize=256)  # a handful of (length, label) pairs; exporter labels vary
def _hkdf_label_prefix(length: int, prefix: bytes, label: bytes) -> bytes:
    full_label = prefix + label
    return length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label


@functools.lru_cache(maxsize=64)
def _context_free_label(length: int, prefix: bytes, label: bytes) -> bytes:
    """The whole HMAC message of HKDF-Expand's one block for a label with no context."""
    return _hkdf_label_prefix(length, prefix, label) + b"\x00\x01"


def derive_secret(suite: SuiteParams, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """Derive-Secret (§7.1), taking the transcript hash rather than the messages."""
    return hkdf_expand_label(suite, secret, label, transcript_hash, suite.hash_len)


@functools.cache
def _empty_hash(suite: SuiteParams) -> bytes:
    """Transcript-Hash("") of Derive-Secret(., "derived", "")."""
    return suite.digest(b"")


def early_secret(suite: SuiteParams, psk: bytes | None = None) -> bytes:
    """§7.1: HKDF-Extract(0, PSK), with HashLen zeros for the PSK when there is none."""
    zeros = bytes(suite.hash_len)
    return hkdf_extract(suite, zeros, zeros if psk is None else psk)


def psk_binder(
    suite: SuiteParams, early: bytes, truncated_hello_hash: bytes, *, external: bool = False
) -> bytes:
    """§4.2.11.2: the binder of a PSK over Transcript-Hash(Truncate(ClientHello)); an external
    PSK's binder key has its own label (§7.1), so it never passes for a resumption PSK."""
    label = b"ext binder" if external else b"res binder"
    binder_key = derive_secret(suite, early, label, _empty_hash(suite))
    return finished_verify_data(suite, binder_key, truncated_hello_hash)


def client_early_traffic_secret(suite: SuiteParams, early: bytes, hello_hash: bytes) -> bytes:
    """§7.1: the key of the client's 0-RTT data (transcript: the ClientHello)."""
    return derive_secret(suite, early, b"c e traffic", hello_hash)


def resumption_psk(suite: SuiteParams, resumption_master: bytes, ticket_nonce: bytes) -> bytes:
    """§4.6.1: the PSK a NewSessionTicket with ``ticket_nonce`` stands for."""
    return hkdf_expand_label(suite, resumption_master, b"resumption", ticket_nonce, suite.hash_len)


@functools.cache
def _handshake_salt(suite: SuiteParams) -> KeyedHmac:
    """HKDF-Extract's key for the Handshake Secret: Derive-Secret(Early Secret, "derived", "")
    with no PSK, the same for every handshake of a suite."""
    derived = derive_secret(suite, early_secret(suite), b"derived", _empty_hash(suite))
    return KeyedHmac(suite, derived)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs more, on every handshake
class HandshakeSecrets:
    handshake_secret: bytes
    client: bytes  # client_handshake_traffic_secret
    server: bytes  # server_handshake_traffic_secret
    master_salt: bytes  # Derive-Secret(Handshake Secret, "derived", "")


def derive_handshake_secrets(
    suite: SuiteParams, shared_secret: bytes, hello_hash: bytes, early: bytes | None = None
) -> HandshakeSecrets:
    """§7.1: Handshake Secret and the secrets derived from it (transcript CH..SH), from the
    early secret of a PSK (``early``) or of none."""
    salt = (
        _handshake_salt(suite)
        if early is None
        else KeyedHmac(suite, derive_secret(suite, early, b"derived", _empty_hash(suite)))
    )
    handshake_secret = salt.digest(shared_secret)  # HKDF-Extract
    prk = KeyedHmac(suite, handshake_secret)
    return HandshakeSecrets(
        handshake_secret,
        expand_label(prk, b"c hs traffic", hello_hash, suite.hash_len),
        expand_label(prk, b"s hs traffic", hello_hash, suite.hash_len),
        expand_label(prk, b"derived", _empty_hash(suite), suite.hash_len),
    )


@dataclass(slots=True)  # not frozen: a frozen __init__ costs more, on every handshake
class ApplicationSecrets:
    master_secret: bytes
    client: bytes  # client_application_traffic_secret_0
    server: bytes  # server_application_traffic_secret_0
    exporter: bytes  # exporter_master_secret


def derive_application_secrets(
    suite: SuiteParams, handshake: HandshakeSecrets, server_finished_hash: bytes
) -> ApplicationSecrets:
    """§7.1: Master Secret and the secrets derived from it (transcript CH..server Finished)."""
    master_secret = hkdf_extract(suite, handshake.master_salt, bytes(suite.hash_len))
    prk = KeyedHmac(suite, master_secret)
    return ApplicationSecrets(
        master_secret,
        expand_label(prk, b"c ap traffic", server_finished_hash, suite.hash_len),
        expand_label(prk, b"s ap traffic", server_finished_hash, suite.hash_len),
        expand_label(prk, b"exp master", server_finished_hash, suite.hash_len),
    )


def resumption_master_secret(
    suite: SuiteParams, master_secret: bytes, client_finished_hash: bytes
) -> bytes:
    return derive_secret(suite, master_secret, b"res master", client_finished_hash)


def finished_verify_data(suite: SuiteParams, base_key: bytes, transcript_hash: bytes) -> bytes:
    """§4.4.4: HMAC(finished_key, Transcript-Hash) with finished_key from the traffic secret."""
    finished_key = hkdf_expand_label(suite, base_key, b"finished", b"", suite.hash_len)
    return KeyedHmac(suite, finished_key).digest(transcript_hash)


def traffic_key_and_iv(suite: SuiteParams, traffic_secret: bytes) -> tuple[bytes, bytes]:
    """§7.3: the record protection key and IV for one direction and epoch."""
    prk = KeyedHmac(suite, traffic_secret)
    return expand_label(prk, b"key", b"", suite.key_len), expand_label(prk, b"iv", b"", 12)


def next_traffic_secret(suite: SuiteParams, traffic_secret: bytes) -> bytes:
    """§7.2: application_traffic_secret_N+1, after a KeyUpdate."""
    return hkdf_expand_label(suite, traffic_secret, b"traffic upd", b"", suite.hash_len)


def export_keying_material(
    suite: SuiteParams, exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """§7.5: TLS-Exporter(label, context_value, key_length)."""
    secret = derive_secret(suite, exporter_secret, label, _empty_hash(suite))
    return hkdf_expand_label(suite, secret, b"exporter", suite.digest(context), length)
