"""Prototypes for a faster HRR path: measured by ``python -m bench.profile_hrr``, not used by the
library.  Each is checked against the library before it is timed:

  * :func:`scan_client_hello`: one index walk over the ClientHello body with ``struct``, building
    the same :class:`~stateless13.messages.ClientHello` as ``pull_client_hello`` (and raising
    the same alert class for bad input): a drop-in replacement for the parser.
  * :class:`HrrTemplate`: per-config precomputation — the HRR record assembled from constant
    pieces around the session id, suite and cookie; the cookie sealed with the AEAD object
    directly from a ``struct`` header; negotiation reduced to lookups in precomputed tables.

``HrrTemplate.answer`` handles the common case (the whole ClientHello1 in one record, nothing
after it) and returns None for anything else, which then takes the ordinary path.
"""

from __future__ import annotations

import os
import struct

from stateless13 import ServerConfig
from stateless13.alerts import (
    DecodeError,
    HandshakeFailure,
    IllegalParameter,
    MissingExtension,
    NoApplicationProtocol,
    ProtocolVersion,
)
from stateless13.cookie import COOKIE_FORMAT_VERSION, peer_binding
from stateless13.messages import (
    GREASE,
    HELLO_RETRY_REQUEST_RANDOM,
    ClientHello,
    ExtensionType,
    KeyShareEntry,
)
from stateless13.negotiation import client_hello_digest
from stateless13.primitives import SUITES

_U16 = struct.Struct(">H")
_HH = struct.Struct(">HH")

_SERVER_NAME = ExtensionType.server_name.value
_SUPPORTED_GROUPS = ExtensionType.supported_groups.value
_SIGNATURE_ALGORITHMS = ExtensionType.signature_algorithms.value
_ALPN = ExtensionType.application_layer_protocol_negotiation.value
_SUPPORTED_VERSIONS = ExtensionType.supported_versions.value
_COOKIE = ExtensionType.cookie.value
_PSK_MODES = ExtensionType.psk_key_exchange_modes.value
_KEY_SHARE = ExtensionType.key_share.value
_EARLY_DATA = ExtensionType.early_data.value
_PRE_SHARED_KEY = ExtensionType.pre_shared_key.value


def _u16_list(data: bytes, length_size: int) -> tuple[int, ...]:
    """A whole extension body that is one <2..> list of uint16 with a 1- or 2-byte length."""
    if len(data) < length_size:
        raise DecodeError("truncated list length")
    length = int.from_bytes(data[:length_size], "big")
    if length < 2 or length % 2 or length_size + length != len(data):
        raise DecodeError("malformed uint16 list")
    return struct.unpack_from(f">{length // 2}H", data, length_size)


def _vector2(data: bytes, minimum: int) -> bytes:
    """The body of a whole-extension <minimum..2^16-1> vector."""
    if len(data) < 2:
        raise DecodeError("truncated vector length")
    length = (data[0] << 8) | data[1]
    if length < minimum or 2 + length != len(data):
        raise DecodeError("malformed vector")
    return data[2:]


def _server_name(data: bytes) -> str | None:
    names = _vector2(data, 1)
    host_name: str | None = None
    position, end = 0, len(names)
    while position < end:
        if end - position < 3:
            raise DecodeError("truncated server_name entry")
        name_type = names[position]
        length = (names[position + 1] << 8) | names[position + 2]
        position += 3
        if length < 1 or length > end - position:
            raise DecodeError("malformed server_name entry")
        name = names[position : position + length]
        position += length
        if name_type != 0:
            continue
        if host_name is not None:
            raise IllegalParameter("more than one host_name in server_name")
        try:
            host_name = name.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("server_name is not ASCII") from None
    return host_name


def _alpn(data: bytes) -> tuple[bytes, ...]:
    names = _vector2(data, 2)
    protocols = []
    position, end = 0, len(names)
    while position < end:
        length = names[position]
        position += 1
        if length < 1 or length > end - position:
            raise DecodeError("malformed ALPN protocol")
        protocols.append(names[position : position + length])
        position += length
    return tuple(protocols)


def _key_shares(data: bytes) -> tuple[KeyShareEntry, ...]:
    entries = _vector2(data, 0)
    shares = []
    position, end = 0, len(entries)
    while position < end:
        if end - position < 4:
            raise DecodeError("truncated key share entry")
        group, length = _HH.unpack_from(entries, position)
        position += 4
        if length < 1 or length > end - position:
            raise DecodeError("malformed key share entry")
        shares.append(KeyShareEntry(group, entries[position : position + length]))
        position += length
    return tuple(shares)


def _psk_modes(data: bytes) -> tuple[int, ...]:
    if not data or data[0] < 1 or 1 + data[0] != len(data):
        raise DecodeError("malformed psk_key_exchange_modes")
    return tuple(data[1:])


def _empty(data: bytes) -> bool:
    if data:
        raise DecodeError("early_data in ClientHello must be empty")
    return True


def scan_client_hello(body: bytes) -> ClientHello:
    """``pull_client_hello`` as one index walk: same result, same alert class on bad input."""
    end = len(body)
    if end < 35:
        raise DecodeError("ClientHello truncated")
    session_id_length = body[34]
    if session_id_length > 32:
        raise DecodeError("session id over 32 bytes")
    position = 35 + session_id_length
    if position + 2 > end:
        raise DecodeError("ClientHello truncated")
    suites_length = (body[position] << 8) | body[position + 1]
    position += 2
    if suites_length < 2 or suites_length % 2 or position + suites_length > end:
        raise DecodeError("malformed cipher_suites")
    cipher_suites = struct.unpack_from(f">{suites_length // 2}H", body, position)
    position += suites_length
    if position >= end:
        raise DecodeError("ClientHello truncated")
    compression_length = body[position]
    position += 1
    if compression_length < 1 or position + compression_length > end:
        raise DecodeError("malformed compression methods")
    compression = body[position : position + compression_length]
    position += compression_length

    fields: dict[str, object] = {}
    extensions: list[tuple[int, bytes]] = []
    if position < end:
        if end - position < 2:
            raise DecodeError("truncated extensions length")
        block_end = position + 2 + ((body[position] << 8) | body[position + 1])
        if block_end > end:
            raise DecodeError("extensions overrun the ClientHello")
        position += 2
        seen = set()
        while position < block_end:  # first the framing, duplicates and order (as the library)
            if block_end - position < 4:
                raise DecodeError("truncated extension header")
            ext_type, length = _HH.unpack_from(body, position)
            position += 4
            if length > block_end - position:
                raise DecodeError("extension overruns the extensions block")
            if ext_type in seen:
                raise IllegalParameter(f"duplicate extension {ext_type}")
            seen.add(ext_type)
            extensions.append((ext_type, body[position : position + length]))
            position += length
        if _PRE_SHARED_KEY in seen and extensions[-1][0] != _PRE_SHARED_KEY:
            raise IllegalParameter("pre_shared_key is not the last extension")
        if block_end != end:
            raise DecodeError("trailing bytes after ClientHello")
        for ext_type, data in extensions:  # then the bodies of those we act on
            if ext_type == _KEY_SHARE:
                fields["key_share"] = _key_shares(data)
            elif ext_type == _SUPPORTED_GROUPS:
                fields["supported_groups"] = _u16_list(data, 2)
            elif ext_type == _SIGNATURE_ALGORITHMS:
                fields["signature_algorithms"] = _u16_list(data, 2)
            elif ext_type == _SUPPORTED_VERSIONS:
                fields["supported_versions"] = _u16_list(data, 1)
            elif ext_type == _SERVER_NAME:
                fields["server_name"] = _server_name(data)
            elif ext_type == _ALPN:
                fields["alpn_protocols"] = _alpn(data)
            elif ext_type == _COOKIE:
                fields["cookie"] = _vector2(data, 1)
            elif ext_type == _PSK_MODES:
                fields["psk_key_exchange_modes"] = _psk_modes(data)
            elif ext_type == _EARLY_DATA:
                fields["early_data"] = _empty(data)
            elif ext_type == _PRE_SHARED_KEY:
                fields["pre_shared_key"] = True
    return ClientHello(
        (body[0] << 8) | body[1],
        body[2:34],
        body[35 : 35 + session_id_length],
        cipher_suites,
        compression,
        tuple(extensions),
        **fields,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------
# Precomputed HRR pieces


_SUPPORTED_VERSIONS_EXT = b"\x00\x2b\x00\x02\x03\x04"
_CCS = b"\x14\x03\x03\x00\x01\x01"
_STATE_HEADER = struct.Struct(">IHHBB")


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
        self.suite_bytes = {suite: suite.to_bytes(2, "big") for suite in self.suites}
        self.key_share_ext = {g: b"\x00\x33\x00\x02" + g.to_bytes(2, "big") for g in self.groups}
        keys = config.cookie_keys
        sealing = keys._sealing_key  # prototype: the library would expose this itself
        self.aead = sealing.aead
        self.cookie_header = bytes((COOKIE_FORMAT_VERSION, sealing.key_id))
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
        hello = scan_client_hello(message[4:])
        if hello.cookie is not None:
            return None
        suite, group, requested = self.negotiate(hello)
        params = SUITES[suite]
        state = b"".join(
            (
                _STATE_HEADER.pack(
                    int(now), suite, group, 1 if requested is not None else 0, params.hash_len
                ),
                params.digest(message),
                client_hello_digest(hello),
                bytes((len(cookie_payload),)),
                cookie_payload,
            )
        )
        nonce = os.urandom(12)
        header = self.cookie_header
        cookie = header + nonce + self.aead.encrypt(nonce, state, header + peer_binding(peer))
        session_id = hello.legacy_session_id
        key_share = b"" if requested is None else self.key_share_ext[requested]
        cookie_length = len(cookie)
        extensions_length = len(key_share) + 6 + cookie_length + len(_SUPPORTED_VERSIONS_EXT)
        body_length = 2 + 32 + 1 + len(session_id) + 3 + 2 + extensions_length
        hrr = b"".join(
            (
                b"\x16\x03\x03",
                (body_length + 4).to_bytes(2, "big"),
                b"\x02\x00",
                body_length.to_bytes(2, "big"),
                b"\x03\x03",
                HELLO_RETRY_REQUEST_RANDOM,
                bytes((len(session_id),)),
                session_id,
                self.suite_bytes[suite],
                b"\x00",
                extensions_length.to_bytes(2, "big"),
                key_share,
                b"\x00\x2c",
                (cookie_length + 2).to_bytes(2, "big"),
                cookie_length.to_bytes(2, "big"),
                cookie,
                _SUPPORTED_VERSIONS_EXT,
                _CCS if session_id else b"",
            )
        )
        return hrr
