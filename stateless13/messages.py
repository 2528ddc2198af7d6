"""TLS 1.3 handshake messages: one dataclass and one ``pull_*``/``push_*`` pair per message.

The dataclasses are plain (slots, not frozen), as in aioquic's ``tls.py``: a frozen dataclass's
``__init__`` costs about four times as much (``object.__setattr__`` per field), and one is built
for every ClientHello of a flood and several per handshake.  Nothing modifies a message once built.

``pull_*`` functions take the message *body* (without the 4-byte handshake header) and either
return a complete message or raise :class:`~stateless13.alerts.DecodeError` (malformed) or
:class:`~stateless13.alerts.IllegalParameter` (well-formed but forbidden, e.g. a duplicated
extension).  ``push_*`` functions return the whole handshake message, header included, because
that is what both the wire and the transcript hash want.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from .alerts import DecodeError, IllegalParameter
from .buffer import Reader, Writer

SSL3 = 0x0300
TLS12 = 0x0303
TLS13 = 0x0304
#: DTLS 1.3 (RFC 9147 §5.3): supported_versions' code, and the legacy_version of its hellos
#: (DTLS 1.2's, as TLS 1.3's hellos carry TLS 1.2's).
DTLS13 = 0xFEFC
DTLS12 = 0xFEFD

# RFC 8446 §4.1.3: an HRR is a ServerHello whose random is SHA-256("HelloRetryRequest").
HELLO_RETRY_REQUEST_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)


class HandshakeType(IntEnum):
    client_hello = 1
    server_hello = 2
    new_session_ticket = 4
    end_of_early_data = 5
    encrypted_extensions = 8
    certificate = 11
    certificate_request = 13
    certificate_verify = 15
    finished = 20
    key_update = 24
    message_hash = 254


class ExtensionType(IntEnum):
    server_name = 0
    supported_groups = 10
    signature_algorithms = 13
    application_layer_protocol_negotiation = 16
    padding = 21
    record_size_limit = 28
    pre_shared_key = 41
    early_data = 42
    supported_versions = 43
    cookie = 44
    psk_key_exchange_modes = 45
    certificate_authorities = 47
    post_handshake_auth = 49
    signature_algorithms_cert = 50
    key_share = 51
    quic_transport_parameters = 57


class CipherSuite(IntEnum):
    TLS_AES_128_GCM_SHA256 = 0x1301
    TLS_AES_256_GCM_SHA384 = 0x1302
    TLS_CHACHA20_POLY1305_SHA256 = 0x1303


class NamedGroup(IntEnum):
    secp256r1 = 0x0017
    secp384r1 = 0x0018
    x25519 = 0x001D
    X25519MLKEM768 = 0x11EC


class SignatureScheme(IntEnum):
    rsa_pkcs1_sha256 = 0x0401
    rsa_pkcs1_sha384 = 0x0501
    rsa_pkcs1_sha512 = 0x0601
    ecdsa_secp256r1_sha256 = 0x0403
    ecdsa_secp384r1_sha384 = 0x0503
    ecdsa_secp521r1_sha512 = 0x0603
    rsa_pss_rsae_sha256 = 0x0804
    rsa_pss_rsae_sha384 = 0x0805
    rsa_pss_rsae_sha512 = 0x0806
    ed25519 = 0x0807
    ed448 = 0x0808
    rsa_pss_pss_sha256 = 0x0809
    rsa_pss_pss_sha384 = 0x080A
    rsa_pss_pss_sha512 = 0x080B


#: RFC 8701 §2: the sixteen GREASE code points, 0x0A0A, 0x1A1A, ..., 0xFAFA.
GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def is_grease(value: int) -> bool:
    return value in GREASE


Extensions = tuple[tuple[int, bytes], ...]
_TYPE_AND_LENGTH = struct.Struct(">HH")

# Upper bound on a handshake message we accept; ClientHellos with post-quantum key shares are ~2 KB.
MAX_HANDSHAKE_MESSAGE_SIZE = 1 << 16


# ---------------------------------------------------------------------------------------------
# Handshake framing


def push_handshake(msg_type: HandshakeType, body: bytes) -> bytes:
    return bytes((msg_type,)) + len(body).to_bytes(3, "big") + body


def split_handshake(buffer: bytes | bytearray) -> tuple[int, int] | None:
    """Type and total length of the first handshake message in ``buffer``, or None if incomplete.

    Raises DecodeError for a message longer than MAX_HANDSHAKE_MESSAGE_SIZE, so a peer cannot
    make us buffer a 16 MB message it announced in 4 bytes.
    """
    if len(buffer) < 4:
        return None
    length = int.from_bytes(buffer[1:4], "big")
    if length > MAX_HANDSHAKE_MESSAGE_SIZE:
        raise DecodeError(f"handshake message of {length} bytes exceeds the limit")
    if len(buffer) < 4 + length:
        return None
    return buffer[0], 4 + length


def _pull_extensions(
    reader: Reader, *, psk_last: bool = False, may_be_absent: bool = False
) -> Extensions:
    # Only a pre-1.3 ClientHello or ServerHello may omit the block (RFC 5246 §7.4.1.2); in every
    # other message it is mandatory (RFC 8446 §4.3.1, §4.4.2), even when empty.
    if may_be_absent and reader.eof():
        return ()
    return _split_extensions(reader.pull_vector(2), psk_last=psk_last)


def _split_extensions(block: bytes, *, psk_last: bool = False) -> Extensions:
    """The (type, body) pairs of an extensions block, refusing duplicates (illegal_parameter)."""
    # The hottest loop of the HRR path, so a plain index walk rather than Reader calls.
    extensions: list[tuple[int, bytes]] = []
    seen: set[int] = set()
    position, end = 0, len(block)
    while position < end:
        if end - position < 4:
            raise DecodeError("truncated extension header")
        ext_type = (block[position] << 8) | block[position + 1]
        length = (block[position + 2] << 8) | block[position + 3]
        position += 4
        if length > end - position:
            raise DecodeError(f"extension {ext_type} overruns the extensions block")
        if ext_type in seen:
            raise IllegalParameter(f"duplicate extension {ext_type}")
        seen.add(ext_type)
        extensions.append((ext_type, block[position : position + length]))
        position += length
    if (
        psk_last
        and ExtensionType.pre_shared_key in seen
        and extensions[-1][0] != ExtensionType.pre_shared_key
    ):
        raise IllegalParameter("pre_shared_key is not the last extension")
    return tuple(extensions)


def _push_extensions(writer: Writer, extensions: Extensions) -> None:
    block = b"".join(
        [
            _TYPE_AND_LENGTH.pack(ext_type, len(ext_data)) + ext_data
            for ext_type, ext_data in extensions
        ]
    )
    writer.push_vector(2, block)


# ---------------------------------------------------------------------------------------------
# ClientHello (RFC 8446 §4.1.2)


@dataclass(slots=True)
class KeyShareEntry:
    group: int
    key_exchange: bytes


@dataclass(slots=True)
class PskIdentity:
    identity: bytes  # our sealed ticket, or another server's opaque label
    obfuscated_ticket_age: int


@dataclass(slots=True)
class OfferedPsks:
    """The ClientHello's pre_shared_key extension (§4.2.11), the last extension of the message."""

    identities: tuple[PskIdentity, ...]
    binders: tuple[bytes, ...]
    #: Bytes at the end of the ClientHello taken by the binders list (its length and entries):
    #: the binders are computed over the message without them (§4.2.11.2).
    binders_size: int


@dataclass(slots=True)
class ClientHello:
    legacy_version: int
    random: bytes
    legacy_session_id: bytes
    cipher_suites: tuple[int, ...]
    legacy_compression_methods: bytes
    extensions: Extensions
    # Parsed views of the extensions we act on; None when the extension is absent.
    server_name: str | None = None
    supported_groups: tuple[int, ...] | None = None
    signature_algorithms: tuple[int, ...] | None = None
    alpn_protocols: tuple[bytes, ...] | None = None
    supported_versions: tuple[int, ...] | None = None
    cookie: bytes | None = None
    psk_key_exchange_modes: tuple[int, ...] | None = None
    key_share: tuple[KeyShareEntry, ...] | None = None
    early_data: bool = False
    pre_shared_key: OfferedPsks | None = None
    record_size_limit: int | None = None  # RFC 8449
    post_handshake_auth: bool = False  # §4.2.6: the client answers a CertificateRequest later
    #: A DTLS 1.3 ClientHello (RFC 9147 §5.3): it had an (empty) legacy_cookie after the session
    #: id, and is answered with DTLS's versions and key schedule.
    dtls: bool = False


def pull_client_hello(body: bytes, *, dtls: bool = False) -> ClientHello:
    # One index walk over the body (every ClientHello1 of a flood comes through here); each
    # length is checked against what is left before anything is sliced.
    end = len(body)
    if end < 35:
        raise DecodeError("ClientHello truncated before its session id")
    session_id_length = body[34]
    if session_id_length > 32:
        raise DecodeError(f"session id of {session_id_length} bytes")
    position = 35 + session_id_length
    if dtls:  # RFC 9147 §5.3: legacy_cookie<0..2^8-1>, which a DTLS 1.3 client leaves empty
        if position >= end:
            raise DecodeError("ClientHello truncated before its legacy_cookie")
        if body[position]:
            raise IllegalParameter("a DTLS 1.3 ClientHello with a legacy_cookie (RFC 9147 §5.3)")
        position += 1
    if position + 2 > end:
        raise DecodeError("ClientHello truncated before its cipher suites")
    suites_length = (body[position] << 8) | body[position + 1]
    position += 2
    if suites_length < 2 or suites_length % 2 or suites_length > end - position:
        raise DecodeError(f"cipher_suites of {suites_length} bytes")
    cipher_suites = struct.unpack_from(f">{suites_length // 2}H", body, position)
    position += suites_length
    if position >= end:
        raise DecodeError("ClientHello truncated before its compression methods")
    compression_length = body[position]
    position += 1
    if compression_length < 1 or compression_length > end - position:
        raise DecodeError(f"compression methods of {compression_length} bytes")
    compression = body[position : position + compression_length]
    position += compression_length

    extensions: Extensions = ()
    if position < end:  # RFC 5246 §7.4.1.2: a pre-1.3 ClientHello may have no extensions block
        if end - position < 2:
            raise DecodeError("truncated extensions length")
        block_end = position + 2 + ((body[position] << 8) | body[position + 1])
        if block_end != end:
            raise DecodeError(f"extensions block ends at {block_end}, the ClientHello at {end}")
        extensions = _split_extensions(body[position + 2 : block_end], psk_last=True)

    views = list(_NO_VIEWS)  # the parsed extensions, in ClientHello's field order
    for ext_type, ext_data in extensions:
        entry = _CLIENT_HELLO_VIEWS.get(ext_type)
        if entry is not None:
            views[entry[0]] = entry[1](ext_data)
    hello = ClientHello(
        (body[0] << 8) | body[1],
        body[2:34],
        body[35 : 35 + session_id_length],
        cipher_suites,
        compression,
        extensions,
        *views,  # type: ignore[arg-type]
    )
    if dtls:  # not among the views the line above fills by position
        hello.dtls = True
    return hello


def push_client_hello(hello: ClientHello) -> bytes:
    writer = Writer()
    writer.push_uint16(hello.legacy_version)
    writer.push_bytes(hello.random)
    writer.push_vector(1, hello.legacy_session_id)
    if hello.dtls:
        writer.push_vector(1, b"")  # legacy_cookie
    writer.push_uint16_list(2, hello.cipher_suites)
    writer.push_vector(1, hello.legacy_compression_methods)
    _push_extensions(writer, hello.extensions)
    return push_handshake(HandshakeType.client_hello, writer.getvalue())


# Extension bodies of the ClientHello: each parser takes the whole body and must consume it.


def _uint16_list(length_size: int) -> Callable[[bytes], tuple[int, ...]]:
    def pull(data: bytes) -> tuple[int, ...]:
        length = int.from_bytes(data[:length_size], "big")
        if len(data) < length_size or length < 2 or length % 2 or length_size + length != len(data):
            raise DecodeError("malformed list of 16-bit values")
        return _uint16_struct(length >> 1).unpack_from(data, length_size)

    return pull


@functools.lru_cache(maxsize=512)  # list lengths repeat from client to client
def _uint16_struct(count: int) -> struct.Struct:
    return struct.Struct(f">{count}H")


def _vector2(data: bytes, minimum: int) -> bytes:
    """The content of a body that is exactly one ``<minimum..2^16-1>`` vector."""
    if len(data) < 2:
        raise DecodeError("truncated vector length")
    length = (data[0] << 8) | data[1]
    if length < minimum or 2 + length != len(data):
        raise DecodeError(f"vector of {length} bytes in a body of {len(data)}")
    return data[2:]


def _pull_server_name(data: bytes) -> str | None:
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
        if name_type != 0:  # RFC 6066 §3: only host_name exists; skip unknown types.
            continue
        if host_name is not None:
            raise IllegalParameter("more than one host_name in server_name")
        try:
            host_name = name.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("server_name is not ASCII") from None
        if not host_name.isprintable() or " " in host_name:  # RFC 6066 §3: a DNS host name
            raise DecodeError("server_name has a space or a control character")
    return host_name


def _pull_alpn(data: bytes) -> tuple[bytes, ...]:
    names = _vector2(data, 2)
    protocols = []
    position, end = 0, len(names)
    while position < end:
        length = names[position]
        position += 1
        if length < 1 or length > end - position:
            raise DecodeError("malformed ALPN protocol name")
        protocols.append(names[position : position + length])
        position += length
    return tuple(protocols)


def _pull_key_shares(data: bytes) -> tuple[KeyShareEntry, ...]:
    entries = _vector2(data, 0)
    shares = []
    position, end = 0, len(entries)
    while position < end:
        if end - position < 4:
            raise DecodeError("truncated key share entry")
        group, length = _TYPE_AND_LENGTH.unpack_from(entries, position)
        position += 4
        if length < 1 or length > end - position:
            raise DecodeError("malformed key share entry")
        shares.append(KeyShareEntry(group, entries[position : position + length]))
        position += length
    return tuple(shares)


def _pull_psk_modes(data: bytes) -> tuple[int, ...]:
    if not data or data[0] < 1 or 1 + data[0] != len(data):
        raise DecodeError("malformed psk_key_exchange_modes")
    return tuple(data[1:])


def _pull_offered_psks(data: bytes) -> OfferedPsks:
    reader = Reader(data)
    identities = []
    with reader.pull_block(2):
        while not reader.eof():
            identity = reader.pull_vector(2, minimum=1)
            identities.append(PskIdentity(identity, reader.pull_uint32()))
    binders_start = reader.position
    binders = []
    with reader.pull_block(2):
        while not reader.eof():
            binders.append(reader.pull_vector(1, minimum=32))
    reader.expect_end("pre_shared_key")
    if not identities or not binders:  # identities<7..2^16-1>, binders<33..2^16-1>
        raise DecodeError("pre_shared_key without identities or binders")
    if len(binders) != len(identities):
        raise IllegalParameter(f"{len(identities)} PSK identities but {len(binders)} binders")
    return OfferedPsks(tuple(identities), tuple(binders), len(data) - binders_start)


def _pull_record_size_limit(data: bytes) -> int:
    if len(data) != 2:
        raise DecodeError(f"record_size_limit of {len(data)} bytes")
    limit = (data[0] << 8) | data[1]
    if limit < 64:  # RFC 8449 §4
        raise IllegalParameter(f"record_size_limit {limit} is below 64")
    return limit


def _pull_empty(data: bytes) -> bool:
    if data:
        raise DecodeError("early_data in a ClientHello must be empty")
    return True


def _pull_post_handshake_auth(data: bytes) -> bool:
    if data:
        raise DecodeError("post_handshake_auth must be empty")
    return True


_CLIENT_HELLO_EXTENSIONS: dict[int, tuple[str, Callable[[bytes], object]]] = {
    ExtensionType.server_name: ("server_name", _pull_server_name),
    ExtensionType.supported_groups: ("supported_groups", _uint16_list(2)),
    ExtensionType.signature_algorithms: ("signature_algorithms", _uint16_list(2)),
    ExtensionType.application_layer_protocol_negotiation: ("alpn_protocols", _pull_alpn),
    ExtensionType.supported_versions: ("supported_versions", _uint16_list(1)),
    ExtensionType.cookie: ("cookie", lambda data: _vector2(data, 1)),
    ExtensionType.psk_key_exchange_modes: ("psk_key_exchange_modes", _pull_psk_modes),
    ExtensionType.key_share: ("key_share", _pull_key_shares),
    ExtensionType.early_data: ("early_data", _pull_empty),
    ExtensionType.pre_shared_key: ("pre_shared_key", _pull_offered_psks),
    ExtensionType.record_size_limit: ("record_size_limit", _pull_record_size_limit),
    ExtensionType.post_handshake_auth: ("post_handshake_auth", _pull_post_handshake_auth),
}

# The same table by field position, so pull_client_hello fills ClientHello's fields in order:
# those after the six fixed ones, up to ``dtls`` (the last, not an extension).
_VIEW_FIELDS = [field.name for field in dataclasses.fields(ClientHello)][6:-1]
_NO_VIEWS: tuple[object, ...] = tuple(
    field.default for field in dataclasses.fields(ClientHello)[6:-1]
)
_CLIENT_HELLO_VIEWS = {
    ext_type: (_VIEW_FIELDS.index(name), parse)
    for ext_type, (name, parse) in _CLIENT_HELLO_EXTENSIONS.items()
}


# ---------------------------------------------------------------------------------------------
# ServerHello and HelloRetryRequest (RFC 8446 §4.1.3, §4.1.4)


@dataclass(slots=True)
class ServerHello:
    random: bytes
    legacy_session_id_echo: bytes
    cipher_suite: int
    extensions: Extensions
    legacy_version: int = TLS12
    legacy_compression_method: int = 0

    @property
    def is_hello_retry_request(self) -> bool:
        return self.random == HELLO_RETRY_REQUEST_RANDOM


def push_server_hello(hello: ServerHello) -> bytes:
    # Byte concatenation rather than a Writer: every HelloRetryRequest goes through here.
    writer = Writer()
    _push_extensions(writer, hello.extensions)
    session_id = hello.legacy_session_id_echo
    body = b"".join(
        (
            hello.legacy_version.to_bytes(2, "big"),
            hello.random,
            bytes((len(session_id),)),
            session_id,
            hello.cipher_suite.to_bytes(2, "big"),
            bytes((hello.legacy_compression_method,)),
            writer.data,
        )
    )
    return push_handshake(HandshakeType.server_hello, body)


def pull_server_hello(body: bytes) -> ServerHello:
    reader = Reader(body)
    legacy_version = reader.pull_uint16()
    random = reader.pull_bytes(32)
    session_id = reader.pull_vector(1, maximum=32)
    cipher_suite = reader.pull_uint16()
    compression = reader.pull_uint8()
    extensions = _pull_extensions(reader, may_be_absent=True)
    reader.expect_end("ServerHello")
    return ServerHello(random, session_id, cipher_suite, extensions, legacy_version, compression)


# Extension bodies the server writes.


def key_share_server_body(group: int, key_exchange: bytes) -> bytes:
    return group.to_bytes(2, "big") + len(key_exchange).to_bytes(2, "big") + key_exchange


def cookie_body(cookie: bytes) -> bytes:
    return len(cookie).to_bytes(2, "big") + cookie


SUPPORTED_VERSIONS_TLS13_BODY = TLS13.to_bytes(2, "big")
SUPPORTED_VERSIONS_DTLS13_BODY = DTLS13.to_bytes(2, "big")


def early_data_ticket_body(max_early_data_size: int) -> bytes:
    """The early_data extension of a NewSessionTicket (§4.2.10); in EncryptedExtensions it is
    empty."""
    return max_early_data_size.to_bytes(4, "big")


def pre_shared_key_server_body(selected_identity: int) -> bytes:
    return selected_identity.to_bytes(2, "big")


def record_size_limit_body(limit: int) -> bytes:
    return limit.to_bytes(2, "big")


def alpn_body(protocol: bytes) -> bytes:
    return (len(protocol) + 1).to_bytes(2, "big") + bytes((len(protocol),)) + protocol


def build_hello_retry_request(
    session_id: bytes,
    suite: int,
    requested_group: int | None,
    cookie: bytes | None,
    *,
    dtls: bool = False,
) -> bytes:
    """The HRR handshake message (§4.1.4), deterministic in its inputs.

    Extension order follows RFC 8448 §5: key_share, cookie, supported_versions.  Assembled from
    constant pieces (it is on the path of every ClientHello1); tests/memory/test_rfc8448.py holds
    it to the trace byte for byte, and tests/memory/test_codec_properties.py to
    ``pull_server_hello``.  Used both to send an HRR and to rebuild the one a client saw, for the
    transcript.
    """
    extensions = b"".join(
        (
            b""
            if requested_group is None
            else _KEY_SHARE_RETRY_HEADER + requested_group.to_bytes(2, "big"),
            b""
            if cookie is None
            else b"\x00\x2c" + (len(cookie) + 2).to_bytes(2, "big") + cookie_body(cookie),
            _DTLS_SUPPORTED_VERSIONS_EXTENSION if dtls else _SUPPORTED_VERSIONS_EXTENSION,
        )
    )
    body = b"".join(
        (
            _DTLS_HRR_PREFIX if dtls else _HRR_PREFIX,
            bytes((len(session_id),)),
            session_id,
            suite.to_bytes(2, "big"),
            b"\x00",
            len(extensions).to_bytes(2, "big"),
            extensions,
        )
    )
    return push_handshake(HandshakeType.server_hello, body)


_HRR_PREFIX = TLS12.to_bytes(2, "big") + HELLO_RETRY_REQUEST_RANDOM
_DTLS_HRR_PREFIX = DTLS12.to_bytes(2, "big") + HELLO_RETRY_REQUEST_RANDOM
_KEY_SHARE_RETRY_HEADER = ExtensionType.key_share.to_bytes(2, "big") + b"\x00\x02"
_SUPPORTED_VERSIONS_EXTENSION = (
    ExtensionType.supported_versions.to_bytes(2, "big")
    + b"\x00\x02"
    + SUPPORTED_VERSIONS_TLS13_BODY
)
_DTLS_SUPPORTED_VERSIONS_EXTENSION = (
    ExtensionType.supported_versions.to_bytes(2, "big")
    + b"\x00\x02"
    + SUPPORTED_VERSIONS_DTLS13_BODY
)


# ---------------------------------------------------------------------------------------------
# EncryptedExtensions (§4.3.1)


@dataclass(slots=True)
class EncryptedExtensions:
    extensions: Extensions


def push_encrypted_extensions(message: EncryptedExtensions) -> bytes:
    writer = Writer()
    _push_extensions(writer, message.extensions)
    return push_handshake(HandshakeType.encrypted_extensions, writer.getvalue())


def pull_encrypted_extensions(body: bytes) -> EncryptedExtensions:
    reader = Reader(body)
    extensions = _pull_extensions(reader)
    reader.expect_end("EncryptedExtensions")
    return EncryptedExtensions(extensions)


# ---------------------------------------------------------------------------------------------
# CertificateRequest (§4.3.2)


@dataclass(slots=True)
class CertificateRequest:
    request_context: bytes  # empty in the handshake; a fresh value after it (§4.6.2)
    extensions: Extensions


def push_certificate_request(message: CertificateRequest) -> bytes:
    writer = Writer()
    writer.push_vector(1, message.request_context)
    _push_extensions(writer, message.extensions)
    return push_handshake(HandshakeType.certificate_request, writer.getvalue())


def pull_certificate_request(body: bytes) -> CertificateRequest:
    reader = Reader(body)
    context = reader.pull_vector(1)
    extensions = _pull_extensions(reader)
    reader.expect_end("CertificateRequest")
    return CertificateRequest(context, extensions)


def signature_algorithms_body(schemes: tuple[int, ...]) -> bytes:
    data = b"".join([scheme.to_bytes(2, "big") for scheme in schemes])
    return len(data).to_bytes(2, "big") + data


def certificate_authorities_body(names: tuple[bytes, ...]) -> bytes:
    """§4.2.4: the DER-encoded distinguished names of the trust anchors."""
    data = b"".join([len(name).to_bytes(2, "big") + name for name in names])
    return len(data).to_bytes(2, "big") + data


# ---------------------------------------------------------------------------------------------
# Certificate (§4.4.2)


@dataclass(slots=True)
class Certificate:
    request_context: bytes
    certificate_list: tuple[tuple[bytes, Extensions], ...]


def push_certificate(message: Certificate) -> bytes:
    writer = Writer()
    writer.push_vector(1, message.request_context)
    with writer.push_block(3):
        for cert_data, extensions in message.certificate_list:
            writer.push_vector(3, cert_data)
            _push_extensions(writer, extensions)
    return push_handshake(HandshakeType.certificate, writer.getvalue())


def pull_certificate(body: bytes) -> Certificate:
    reader = Reader(body)
    context = reader.pull_vector(1)
    entries: list[tuple[bytes, Extensions]] = []
    with reader.pull_block(3):
        while not reader.eof():
            cert_data = reader.pull_vector(3, minimum=1)
            extensions = _pull_extensions(reader)
            entries.append((cert_data, extensions))
    reader.expect_end("Certificate")
    return Certificate(context, tuple(entries))


# ---------------------------------------------------------------------------------------------
# CertificateVerify (§4.4.3), Finished (§4.4.4), KeyUpdate (§4.6.3)


@dataclass(slots=True)
class CertificateVerify:
    algorithm: int
    signature: bytes


def push_certificate_verify(message: CertificateVerify) -> bytes:
    writer = Writer()
    writer.push_uint16(message.algorithm)
    writer.push_vector(2, message.signature)
    return push_handshake(HandshakeType.certificate_verify, writer.getvalue())


def pull_certificate_verify(body: bytes) -> CertificateVerify:
    reader = Reader(body)
    algorithm = reader.pull_uint16()
    signature = reader.pull_vector(2)
    reader.expect_end("CertificateVerify")
    return CertificateVerify(algorithm, signature)


@dataclass(slots=True)
class Finished:
    verify_data: bytes


def push_finished(message: Finished) -> bytes:
    return push_handshake(HandshakeType.finished, message.verify_data)


def pull_finished(body: bytes) -> Finished:
    return Finished(body)


# ---------------------------------------------------------------------------------------------
# NewSessionTicket (§4.6.1)


@dataclass(slots=True)
class NewSessionTicket:
    lifetime: int  # seconds, at most 7 days
    age_add: int
    nonce: bytes
    ticket: bytes
    extensions: Extensions = ()


def push_new_session_ticket(message: NewSessionTicket) -> bytes:
    writer = Writer()
    writer.push_uint32(message.lifetime)
    writer.push_uint32(message.age_add)
    writer.push_vector(1, message.nonce)
    writer.push_vector(2, message.ticket)
    _push_extensions(writer, message.extensions)
    return push_handshake(HandshakeType.new_session_ticket, writer.getvalue())


def pull_new_session_ticket(body: bytes) -> NewSessionTicket:
    reader = Reader(body)
    lifetime = reader.pull_uint32()
    age_add = reader.pull_uint32()
    nonce = reader.pull_vector(1)
    ticket = reader.pull_vector(2, minimum=1)
    extensions = _pull_extensions(reader)
    reader.expect_end("NewSessionTicket")
    return NewSessionTicket(lifetime, age_add, nonce, ticket, extensions)


def push_end_of_early_data() -> bytes:
    return push_handshake(HandshakeType.end_of_early_data, b"")


@dataclass(slots=True)
class KeyUpdate:
    request_update: bool


def push_key_update(message: KeyUpdate) -> bytes:
    return push_handshake(HandshakeType.key_update, bytes((int(message.request_update),)))


def pull_key_update(body: bytes) -> KeyUpdate:
    reader = Reader(body)
    value = reader.pull_uint8()
    reader.expect_end("KeyUpdate")
    if value > 1:
        raise IllegalParameter(f"KeyUpdate request_update={value}")
    return KeyUpdate(bool(value))
