"""The TLS 1.3 key schedule (RFC 8446 §7), one function per formula.

There is no PSK support, so the early secret is HKDF-Extract(0, 0) and is computed once per hash.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

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


def hkdf_extract(suite: SuiteParams, salt: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(suite.hash_algorithm, salt, ikm)


def hkdf_expand_label(
    suite: SuiteParams, secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """HKDF-Expand-Label (§7.1): HkdfLabel = length || "tls13 " + label || context."""
    info = _hkdf_label_prefix(length, label) + bytes((len(context),)) + context
    return HKDFExpand(suite.hash_algorithm, length, info).derive(secret)


@functools.lru_cache(maxsize=256)  # a handful of (length, label) pairs; exporter labels vary
def _hkdf_label_prefix(length: int, label: bytes) -> bytes:
    full_label = b"tls13 " + label
    return length.to_bytes(2, "big") + bytes((len(full_label),)) + full_label


def derive_secret(suite: SuiteParams, secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """Derive-Secret (§7.1), taking the transcript hash rather than the messages."""
    return hkdf_expand_label(suite, secret, label, transcript_hash, suite.hash_len)


@functools.cache
def _derived_from_early_secret(suite: SuiteParams) -> bytes:
    zeros = bytes(suite.hash_len)
    early_secret = hkdf_extract(suite, zeros, zeros)
    return derive_secret(suite, early_secret, b"derived", suite.digest(b""))


def early_secret(suite: SuiteParams) -> bytes:
    zeros = bytes(suite.hash_len)
    return hkdf_extract(suite, zeros, zeros)


@dataclass(slots=True)  # not frozen: a frozen __init__ costs more, on every handshake
class HandshakeSecrets:
    handshake_secret: bytes
    client: bytes  # client_handshake_traffic_secret
    server: bytes  # server_handshake_traffic_secret


def derive_handshake_secrets(
    suite: SuiteParams, shared_secret: bytes, hello_hash: bytes
) -> HandshakeSecrets:
    """§7.1: Handshake Secret and the two handshake traffic secrets (transcript CH..SH)."""
    handshake_secret = hkdf_extract(suite, _derived_from_early_secret(suite), shared_secret)
    return HandshakeSecrets(
        handshake_secret,
        derive_secret(suite, handshake_secret, b"c hs traffic", hello_hash),
        derive_secret(suite, handshake_secret, b"s hs traffic", hello_hash),
    )


@dataclass(slots=True)  # not frozen: a frozen __init__ costs more, on every handshake
class ApplicationSecrets:
    master_secret: bytes
    client: bytes  # client_application_traffic_secret_0
    server: bytes  # server_application_traffic_secret_0
    exporter: bytes  # exporter_master_secret


def derive_application_secrets(
    suite: SuiteParams, handshake_secret: bytes, server_finished_hash: bytes
) -> ApplicationSecrets:
    """§7.1: Master Secret and the secrets derived from it (transcript CH..server Finished)."""
    derived = derive_secret(suite, handshake_secret, b"derived", suite.digest(b""))
    master_secret = hkdf_extract(suite, derived, bytes(suite.hash_len))
    return ApplicationSecrets(
        master_secret,
        derive_secret(suite, master_secret, b"c ap traffic", server_finished_hash),
        derive_secret(suite, master_secret, b"s ap traffic", server_finished_hash),
        derive_secret(suite, master_secret, b"exp master", server_finished_hash),
    )


def resumption_master_secret(
    suite: SuiteParams, master_secret: bytes, client_finished_hash: bytes
) -> bytes:
    return derive_secret(suite, master_secret, b"res master", client_finished_hash)


def finished_verify_data(suite: SuiteParams, base_key: bytes, transcript_hash: bytes) -> bytes:
    """§4.4.4: HMAC(finished_key, Transcript-Hash) with finished_key from the traffic secret."""
    finished_key = hkdf_expand_label(suite, base_key, b"finished", b"", suite.hash_len)
    return hmac.digest(finished_key, transcript_hash, suite.hash_name)


def traffic_key_and_iv(suite: SuiteParams, traffic_secret: bytes) -> tuple[bytes, bytes]:
    """§7.3: the record protection key and IV for one direction and epoch."""
    return (
        hkdf_expand_label(suite, traffic_secret, b"key", b"", suite.key_len),
        hkdf_expand_label(suite, traffic_secret, b"iv", b"", 12),
    )


def next_traffic_secret(suite: SuiteParams, traffic_secret: bytes) -> bytes:
    """§7.2: application_traffic_secret_N+1, after a KeyUpdate."""
    return hkdf_expand_label(suite, traffic_secret, b"traffic upd", b"", suite.hash_len)


def export_keying_material(
    suite: SuiteParams, exporter_secret: bytes, label: bytes, context: bytes, length: int
) -> bytes:
    """§7.5: TLS-Exporter(label, context_value, key_length)."""
    secret = derive_secret(suite, exporter_secret, label, suite.digest(b""))
    return hkdf_expand_label(suite, secret, b"exporter", suite.digest(context), length)
