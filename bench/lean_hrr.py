"""Prototypes for what is left of the HRR proposals (docs/BENCHMARKS.md §8): measured by
``python -m bench.profile_hrr``, not used by the library.

The library's own parser (``pull_client_hello``) and HRR assembly (``build_hello_retry_request``)
are used as they are; only what the library does not do yet is prototyped here:

  * :class:`HrrTemplate`: per-config tables for negotiation (P2) and the cookie sealed straight
    from a ``struct`` header with the AEAD object (P4), with no ``Negotiated``, ``CookieState`` or
    ``encode_cookie_state`` on the HRR path.  ``HrrTemplate.answer`` handles the common case (the
    whole ClientHello1 in one record, nothing after it) and returns None for anything else, which
    then takes the ordinary path.
  * :func:`slice_digest`: ``client_hello_digest`` fed the wire slices of the ClientHello instead
    of re-packed tuples (P5).  A different digest input, so it would need a new cookie format
    version: timed, not interchangeable with the library's.
"""

from __future__ import annotations

import hashlib
import os
import struct

from stateless13 import ServerConfig
from stateless13.alerts import (
    HandshakeFailure,
    IllegalParameter,
    MissingExtension,
    NoApplicationProtocol,
    ProtocolVersion,
)
from stateless13.cookie import peer_binding
from stateless13.handshake import build_hello_retry_request
from stateless13.messages import GREASE, ClientHello, ExtensionType, pull_client_hello
from stateless13.negotiation import client_hello_digest
from stateless13.primitives import SUITES
from stateless13.record import CHANGE_CIPHER_SPEC_RECORD

_STATE_HEADER = struct.Struct(">IHHBB")
_TYPE_AND_LENGTH = struct.Struct(">HH")


class HrrTemplate:
    """What a config fixes about every HelloRetryRequest, computed once."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.suites = tuple(int(s) for s in config.cipher_suites)
        self.groups = tuple(int(g) for g in config.groups)
        self.schemes = frozenset(
            int(scheme)
            for credential in config.credentials
            for scheme in credential.signature_schemes
        )
        self.alpn = config.alpn_protocols
        sealing = config.cookie_keys._sealing_key  # prototype: the library would expose this
        self.aead = sealing.aead
        self.cookie_header = sealing.header
        self.max_size = config.max_client_hello_size

    def negotiate(self, hello: ClientHello) -> tuple[int, int, int | None]:
        """(suite, cookie group, group the HRR names or None): ``negotiate`` + ``group_to_request``
        with the config's lists turned into lookups (same checks, same alerts)."""
        versions = hello.supported_versions
        if versions is None or 0x0304 not in versions:
            raise ProtocolVersion("client does not offer TLS 1.3 in supported_versions")
        if hello.legacy_compression_methods != b"\x00":
            raise IllegalParameter("legacy_compression_methods must be exactly [null]")
        groups, shares, schemes = (
            hello.supported_groups,
            hello.key_share,
            hello.signature_algorithms,
        )
        if schemes is None:
            raise MissingExtension("no signature_algorithms extension")
        if groups is None:
            raise MissingExtension("no supported_groups extension")
        if shares is None:
            raise MissingExtension("no key_share extension")
        shared = {share.group for share in shares}
        if len(shared) != len(shares):
            raise IllegalParameter("two key shares for one group")
        if not shared.issubset(groups) and not (shared - set(groups)) <= GREASE:
            raise IllegalParameter("key share for a group not in supported_groups")
        suite = next((s for s in self.suites if s in hello.cipher_suites), None)
        if suite is None:
            raise HandshakeFailure("no cipher suite in common")
        group = next((g for g in self.groups if g in groups), None)
        if group is None:
            raise HandshakeFailure("no key exchange group in common")
        if self.schemes.isdisjoint(schemes):
            raise HandshakeFailure("no signature scheme in common with our certificates")
        offered = hello.alpn_protocols
        if self.alpn and offered is not None and not any(p in offered for p in self.alpn):
            raise NoApplicationProtocol("no ALPN protocol in common")
        if group not in shared:
            return suite, group, group
        if not self.config.retry_names_a_group:
            return suite, group, None
        named = next((g for g in self.groups if g in groups and g not in shared), None)
        return suite, group if named is None else named, named

    def seal(
        self,
        now: float,
        suite: int,
        group: int,
        requested: bool,
        hello_hash: bytes,
        hello_digest: bytes,
        binding: bytes,
        cookie_payload: bytes = b"",
    ) -> bytes:
        """The cookie, sealed from a ``struct`` header: the same plaintext as ``CookieKeyRing``."""
        state = b"".join(
            (
                _STATE_HEADER.pack(int(now), suite, group, requested, len(hello_hash)),
                hello_hash,
                hello_digest,
                bytes((len(cookie_payload),)),
                cookie_payload,
            )
        )
        nonce = os.urandom(12)
        header = self.cookie_header
        return header + nonce + self.aead.encrypt(nonce, state, header + binding)

    def answer(
        self, data: bytes, peer: tuple[str, int] | None, now: float, cookie_payload: bytes = b""
    ) -> bytes | None:
        """HRR (+ CCS) for a one-record ClientHello1, or None: take the ordinary path."""
        if len(data) < 9 or data[0] != 22 or data[5] != 1:
            return None
        if int.from_bytes(data[3:5], "big") + 5 != len(data):
            return None
        if int.from_bytes(data[6:9], "big") + 9 != len(data) or len(data) - 5 > self.max_size:
            return None
        message = data[5:]
        hello = pull_client_hello(message[4:])
        if hello.cookie is not None:
            return None
        suite, group, requested = self.negotiate(hello)
        binding = peer_binding(peer)
        cookie = self.seal(
            now,
            suite,
            group,
            requested is not None,
            SUITES[suite].digest(message),
            client_hello_digest(hello),
            binding,
            cookie_payload,
        )
        session_id = hello.legacy_session_id
        hrr = build_hello_retry_request(session_id, suite, requested, cookie)
        record = b"\x16\x03\x03" + len(hrr).to_bytes(2, "big") + hrr
        return record + CHANGE_CIPHER_SPEC_RECORD if session_id else record


# ---------------------------------------------------------------------------------------------
# P5: the ClientHello digest from wire slices

_SUPPORTED_VERSIONS = ExtensionType.supported_versions.value
_SUPPORTED_GROUPS = ExtensionType.supported_groups.value
_SIGNATURE_ALGORITHMS = ExtensionType.signature_algorithms.value
_SERVER_NAME = ExtensionType.server_name.value
_ALPN = ExtensionType.application_layer_protocol_negotiation.value
#: The bound extensions, in the order they are hashed, with their GREASE-carrying list (if any).
_SLICED = (
    (_SUPPORTED_VERSIONS, "supported_versions", 1),
    (_SUPPORTED_GROUPS, "supported_groups", 2),
    (_SIGNATURE_ALGORITHMS, "signature_algorithms", 2),
    (_SERVER_NAME, "", 0),
    (_ALPN, "", 0),
)
_SLICED_TYPES = frozenset(entry[0] for entry in _SLICED)
_ABSENT = b"\xff\xff"  # no bound extension has type 0xffff


def slice_digest(hello: ClientHello, body: bytes) -> bytes:
    """SHA-256 over the same fields as ``client_hello_digest``, fed as wire slices.

    legacy_version … compression methods are one slice when the cipher suites hold no GREASE;
    each bound extension is its type, length and body as sent (a list that holds GREASE is
    re-packed without it).  Every piece is length-prefixed, so the input stays unambiguous.
    """
    suites = hello.cipher_suites
    compression = hello.legacy_compression_methods
    session_end = 35 + len(hello.legacy_session_id)
    if GREASE.isdisjoint(suites):
        pieces = [body[: session_end + 3 + 2 * len(suites) + len(compression)]]
    else:
        kept = [s for s in suites if s not in GREASE]
        pieces = [
            body[:session_end],
            struct.pack(f">H{len(kept)}H", 2 * len(kept), *kept),
            bytes((len(compression),)),
            compression,
        ]
    bodies = {t: b for t, b in hello.extensions if t in _SLICED_TYPES}
    for ext_type, field, length_size in _SLICED:
        data = bodies.get(ext_type)
        if data is None:
            pieces.append(_ABSENT)
            continue
        if length_size:
            values = getattr(hello, field)
            if not GREASE.isdisjoint(values):
                kept = [v for v in values if v not in GREASE]
                data = (2 * len(kept)).to_bytes(length_size, "big") + struct.pack(
                    f">{len(kept)}H", *kept
                )
        pieces.append(_TYPE_AND_LENGTH.pack(ext_type, len(data)))
        pieces.append(data)
    return hashlib.sha256(b"".join(pieces)).digest()
