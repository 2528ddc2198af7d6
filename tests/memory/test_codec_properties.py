"""Codec properties, by hypothesis: round trips, strict prefixes, and garbage that never crashes.

* ``pull_X(push_X(m)[4:]) == m`` for random valid ClientHello (parsed views included),
  ServerHello, EncryptedExtensions, Certificate, CertificateVerify and KeyUpdate.
* Every strict prefix of a pushed body raises ``DecodeError``.  The one exception is exact: a
  ClientHello or ServerHello cut right before its extensions block is the pre-TLS-1.3 form
  without extensions (RFC 5246 §7.4.1.2), which parses with ``extensions == ()``.  No other
  message's extensions may be absent (RFC 8446 §4.3.1, §4.4.2).
* Random bytes and random mutations of real ClientHellos make ``pull_*`` raise only AlertError
  subclasses and ``stateless_accept`` return only its result types, never anything else.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from stateless13 import (
    Accepted,
    AlertDescription,
    AlertError,
    CookieKeyRing,
    DecodeError,
    HelloRetry,
    IllegalParameter,
    NamedGroup,
    NeedMoreData,
    Rejected,
    ServerConfig,
    ServerConnection,
    stateless_accept,
)
from stateless13.messages import (
    Certificate,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    Extensions,
    ExtensionType,
    HandshakeType,
    KeyShareEntry,
    KeyUpdate,
    NewSessionTicket,
    OfferedPsks,
    PskIdentity,
    ServerHello,
    pull_certificate,
    pull_certificate_verify,
    pull_client_hello,
    pull_encrypted_extensions,
    pull_key_update,
    pull_new_session_ticket,
    pull_server_hello,
    push_certificate,
    push_certificate_verify,
    push_client_hello,
    push_encrypted_extensions,
    push_handshake,
    push_key_update,
    push_new_session_ticket,
    push_server_hello,
)
from stateless13.record import ContentType, frame_plaintext
from tests.helpers import PEER, PythonSSLClient, handshake_bytes

Ext = ExtensionType
PROPERTY = settings(max_examples=200, deadline=None)
FEW = settings(max_examples=100, deadline=None)  # the prefix properties parse every prefix

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
PARSED_BY_CLIENT_HELLO = {
    Ext.server_name,
    Ext.supported_groups,
    Ext.signature_algorithms,
    Ext.application_layer_protocol_negotiation,
    Ext.supported_versions,
    Ext.cookie,
    Ext.psk_key_exchange_modes,
    Ext.key_share,
    Ext.early_data,
    Ext.pre_shared_key,
    Ext.record_size_limit,
    Ext.post_handshake_auth,
}


def opaque(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def vector(length_size: int, data: bytes) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def u16s(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


# ---------------------------------------------------------------------------------------------
# Extensions: (type, body, name of the ClientHello view it fills or None, that view's value)

Entry = tuple[int, bytes, str | None, object]


def _u16_list_entry(
    ext_type: int, view: str, length_size: int, max_items: int
) -> st.SearchStrategy:
    return st.lists(u16, min_size=1, max_size=max_items).map(
        lambda vs: (ext_type, vector(length_size, u16s(vs)), view, tuple(vs))
    )


@st.composite
def _server_name_entry(draw: st.DrawFn) -> Entry:
    host_name = draw(st.none() | st.text(string.ascii_letters + string.digits + ".-", min_size=1))
    names = [(t, draw(opaque(1, 10))) for t in draw(st.lists(st.integers(1, 255), max_size=2))]
    if host_name is not None:
        names.insert(draw(st.integers(0, len(names))), (0, host_name.encode("ascii")))
    if not names:
        names = [(0, b"localhost")]
        host_name = "localhost"
    body = vector(2, b"".join(bytes((t,)) + vector(2, n) for t, n in names))
    return (Ext.server_name, body, "server_name", host_name)


def _alpn_entry() -> st.SearchStrategy:
    return st.lists(opaque(1, 12), min_size=1, max_size=5).map(
        lambda ps: (
            Ext.application_layer_protocol_negotiation,
            vector(2, b"".join(vector(1, p) for p in ps)),
            "alpn_protocols",
            tuple(ps),
        )
    )


def _key_share_entry() -> st.SearchStrategy:
    return st.lists(st.tuples(u16, opaque(1, 40)), max_size=4).map(
        lambda es: (
            Ext.key_share,
            vector(2, b"".join(g.to_bytes(2, "big") + vector(2, k) for g, k in es)),
            "key_share",
            tuple(KeyShareEntry(g, k) for g, k in es),
        )
    )


@st.composite
def _pre_shared_key_entry(draw: st.DrawFn) -> Entry:
    identities = draw(
        st.lists(st.tuples(opaque(1, 40), st.integers(0, 0xFFFFFFFF)), min_size=1, max_size=3)
    )
    binders = draw(st.lists(opaque(32, 48), min_size=len(identities), max_size=len(identities)))
    binders_block = vector(2, b"".join(vector(1, b) for b in binders))
    body = (
        vector(2, b"".join(vector(2, i) + a.to_bytes(4, "big") for i, a in identities))
        + binders_block
    )
    offered = OfferedPsks(
        tuple(PskIdentity(i, a) for i, a in identities), tuple(binders), len(binders_block)
    )
    return (Ext.pre_shared_key, body, "pre_shared_key", offered)


def _unknown_entry() -> st.SearchStrategy:
    unparsed = u16.map(lambda t: t + 0x100 if t in PARSED_BY_CLIENT_HELLO else t)
    return st.tuples(unparsed, opaque()).map(lambda e: (e[0], e[1], None, None))


CLIENT_HELLO_EXTENSION = st.one_of(
    _server_name_entry(),
    _u16_list_entry(Ext.supported_groups, "supported_groups", 2, 12),
    _u16_list_entry(Ext.signature_algorithms, "signature_algorithms", 2, 12),
    _u16_list_entry(Ext.supported_versions, "supported_versions", 1, 127),
    _alpn_entry(),
    opaque(1, 60).map(lambda c: (Ext.cookie, vector(2, c), "cookie", c)),
    opaque(1, 4).map(lambda m: (Ext.psk_key_exchange_modes, vector(1, m), "psk_key_exchange_modes",
                                tuple(m))),
    _key_share_entry(),
    st.just((Ext.early_data, b"", "early_data", True)),
    st.just((Ext.post_handshake_auth, b"", "post_handshake_auth", True)),
    _pre_shared_key_entry(),
    _unknown_entry(),
)  # fmt: skip

ANY_EXTENSIONS: st.SearchStrategy[Extensions] = st.lists(
    st.tuples(u16, opaque()), max_size=6, unique_by=lambda e: e[0]
).map(tuple)


@st.composite
def client_hellos(draw: st.DrawFn) -> ClientHello:
    entries = draw(st.lists(CLIENT_HELLO_EXTENSION, max_size=8, unique_by=lambda e: e[0]))
    entries.sort(key=lambda e: e[0] == Ext.pre_shared_key)  # it must come last (§4.2.11)
    return ClientHello(
        legacy_version=draw(u16),
        random=draw(opaque(32, 32)),
        legacy_session_id=draw(opaque(0, 32)),
        cipher_suites=tuple(draw(st.lists(u16, min_size=1, max_size=20))),
        legacy_compression_methods=draw(opaque(1, 4)),
        extensions=tuple((t, body) for t, body, _, _ in entries),
        **{view: value for _, _, view, value in entries if view is not None},
    )


server_hellos = st.builds(
    ServerHello,
    random=opaque(32, 32),
    legacy_session_id_echo=opaque(0, 32),
    cipher_suite=u16,
    extensions=ANY_EXTENSIONS,
    legacy_version=u16,
    legacy_compression_method=u8,
)
encrypted_extensions = st.builds(EncryptedExtensions, ANY_EXTENSIONS)
certificates = st.builds(
    Certificate,
    opaque(0, 8),
    st.lists(st.tuples(opaque(1, 60), ANY_EXTENSIONS), max_size=4).map(tuple),
)
certificate_verifies = st.builds(CertificateVerify, u16, opaque(0, 120))
key_updates = st.builds(KeyUpdate, st.booleans())
new_session_tickets = st.builds(
    NewSessionTicket,
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    opaque(0, 255),
    opaque(1, 200),
    ANY_EXTENSIONS,
)


# ---------------------------------------------------------------------------------------------
# Round trips and strict prefixes


M = TypeVar("M")


@dataclasses.dataclass(frozen=True)
class Codec(Generic[M]):
    push: Callable[[M], bytes]
    pull: Callable[[bytes], M]
    # Offset of the extensions block in the body when that block may be absent (pre-1.3 hellos).
    optional_extensions_at: Callable[[M], int] | None = None


def _client_hello_extensions_at(hello: ClientHello) -> int:
    session_id = 1 + len(hello.legacy_session_id)
    suites = 2 + 2 * len(hello.cipher_suites)
    return 2 + 32 + session_id + suites + 1 + len(hello.legacy_compression_methods)


def _server_hello_extensions_at(hello: ServerHello) -> int:
    return 2 + 32 + 1 + len(hello.legacy_session_id_echo) + 2 + 1


# Each codec is typed for its own message; MESSAGES pairs every value with its codec's name.
CODECS: dict[str, Codec[Any]] = {
    "ClientHello": Codec(push_client_hello, pull_client_hello, _client_hello_extensions_at),
    "ServerHello": Codec(push_server_hello, pull_server_hello, _server_hello_extensions_at),
    "EncryptedExtensions": Codec(push_encrypted_extensions, pull_encrypted_extensions),
    "Certificate": Codec(push_certificate, pull_certificate),
    "CertificateVerify": Codec(push_certificate_verify, pull_certificate_verify),
    "KeyUpdate": Codec(push_key_update, pull_key_update),
    "NewSessionTicket": Codec(push_new_session_ticket, pull_new_session_ticket),
}
MESSAGES = st.one_of(
    client_hellos().map(lambda m: ("ClientHello", m)),
    server_hellos.map(lambda m: ("ServerHello", m)),
    encrypted_extensions.map(lambda m: ("EncryptedExtensions", m)),
    certificates.map(lambda m: ("Certificate", m)),
    certificate_verifies.map(lambda m: ("CertificateVerify", m)),
    key_updates.map(lambda m: ("KeyUpdate", m)),
    new_session_tickets.map(lambda m: ("NewSessionTicket", m)),
)


@PROPERTY
@given(client_hellos())
def test_client_hello_round_trip(hello: ClientHello) -> None:
    message = push_client_hello(hello)
    assert message[0] == HandshakeType.client_hello
    assert int.from_bytes(message[1:4], "big") == len(message) - 4
    assert pull_client_hello(message[4:]) == hello  # fixed fields, raw extensions and views


@PROPERTY
@given(MESSAGES)
def test_round_trip(named: tuple[str, object]) -> None:
    name, value = named
    codec = CODECS[name]
    message = codec.push(value)
    assert int.from_bytes(message[1:4], "big") == len(message) - 4
    assert codec.pull(message[4:]) == value


def _assert_only_decode_error(pull: Callable[[bytes], object], data: bytes) -> None:
    try:
        parsed = pull(data)
    except DecodeError:
        return
    raise AssertionError(f"prefix of {len(data)} bytes parsed as {parsed!r}")


@FEW
@given(MESSAGES)
def test_every_strict_prefix_is_a_decode_error(named: tuple[str, object]) -> None:
    name, value = named
    codec = CODECS[name]
    body = codec.push(value)[4:]
    legacy_end = codec.optional_extensions_at(value) if codec.optional_extensions_at else None
    for length in range(len(body)):
        if length == legacy_end:  # the pre-1.3 hello without extensions: valid, and exact
            assert codec.pull(body[:length]) == _without_extensions(value)
            continue
        _assert_only_decode_error(codec.pull, body[:length])


def _without_extensions(value: object) -> object:
    """The hello as parsed without its extensions block: no raw extensions, no parsed views."""
    if isinstance(value, ClientHello):
        return ClientHello(
            value.legacy_version,
            value.random,
            value.legacy_session_id,
            value.cipher_suites,
            value.legacy_compression_methods,
            (),
        )
    assert isinstance(value, ServerHello)
    return dataclasses.replace(value, extensions=())


def test_certificate_entry_without_its_extensions_is_a_decode_error() -> None:
    """RFC 8446 §4.4.2: every CertificateEntry carries an extensions vector, empty or not."""
    body = b"\x00" + vector(3, vector(3, b"certificate"))  # context, then one entry, no extensions
    _assert_only_decode_error(pull_certificate, body)


@PROPERTY
@given(st.integers(2, 255))
def test_key_update_values_other_than_0_and_1_are_illegal(value: int) -> None:
    try:
        pull_key_update(bytes((value,)))
    except IllegalParameter as error:
        assert error.reason
    else:
        raise AssertionError(f"KeyUpdate {value} accepted")


# ---------------------------------------------------------------------------------------------
# Garbage in: only AlertError subclasses out of pull_*, only result types out of stateless_accept

NOW = 1_750_000_000.0
CONFIG = ServerConfig.self_signed(cookie_keys=CookieKeyRing.from_bytes(b"\x11" * 32))
MLKEM_CONFIG = dataclasses.replace(CONFIG, groups=(NamedGroup.X25519MLKEM768, NamedGroup.x25519))
P256_CONFIG = dataclasses.replace(CONFIG, groups=(NamedGroup.secp256r1,))


def _frame(message: bytes) -> bytes:
    return frame_plaintext(ContentType.handshake, message)


def _real_flight(config: ServerConfig) -> tuple[bytes, bytes]:
    """A real CH1 record and the real CCS + CH2 records (with a cookie valid at NOW)."""
    client = PythonSSLClient()
    ch1 = client.step()
    first = stateless_accept(config, ch1, peer=PEER, now=NOW)
    assert isinstance(first, HelloRetry)
    return ch1, client.step(first.data_to_send)


CH1, CH2 = _real_flight(CONFIG)
CH1_BODY = handshake_bytes(CH1)[4:]
CH2_HELLO = pull_client_hello(handshake_bytes(CH2)[4:])
_, P256_CH2 = _real_flight(P256_CONFIG)
P256_CH2_HELLO = pull_client_hello(handshake_bytes(P256_CH2)[4:])


def _mlkem_ch2() -> ClientHello:
    """CH2 for X25519MLKEM768 (which OpenSSL 3.0 lacks): the real CH1 + the group, cookie."""
    hello = pull_client_hello(CH1_BODY)
    groups = (NamedGroup.X25519MLKEM768, *(hello.supported_groups or ()))
    hello = _with_ext(hello, Ext.supported_groups, vector(2, u16s(list(groups))))
    first = stateless_accept(MLKEM_CONFIG, _frame(push_client_hello(hello)), peer=PEER, now=NOW)
    assert isinstance(first, HelloRetry)
    retry = pull_server_hello(handshake_bytes(first.data_to_send)[4:])
    return _with_ext(hello, Ext.cookie, dict(retry.extensions)[Ext.cookie])


def _with_ext(hello: ClientHello, ext_type: int, body: bytes) -> ClientHello:
    extensions = [e for e in hello.extensions if e[0] != ext_type]
    return dataclasses.replace(hello, extensions=(*extensions, (ext_type, body)))


MLKEM_CH2_HELLO = _mlkem_ch2()


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few random byte flips, overwrites, insertions, deletions or a cut."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and out:
            out[at] = draw(u8)
        elif kind == "insert":
            out[at:at] = draw(opaque(1, 4))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 4))]
        elif kind == "cut":
            del out[at:]
    return bytes(out)


PULLS: dict[str, Callable[[bytes], object]] = {
    "ClientHello": pull_client_hello,
    "DTLS ClientHello": lambda body: pull_client_hello(body, dtls=True),
    "ServerHello": pull_server_hello,
    "EncryptedExtensions": pull_encrypted_extensions,
    "Certificate": pull_certificate,
    "CertificateVerify": pull_certificate_verify,
    "KeyUpdate": pull_key_update,
    "NewSessionTicket": pull_new_session_ticket,
}


def _assert_only_alert_errors(pull: Callable[[bytes], object], data: bytes) -> None:
    try:
        pull(data)
    except AlertError as error:
        assert type(error) is not AlertError  # a specific alert, not the internal_error default
        assert error.description != AlertDescription.internal_error
        assert error.reason


@PROPERTY
@given(st.sampled_from(sorted(PULLS)), opaque(0, 300))
def test_pull_random_bytes_raises_only_alert_errors(name: str, data: bytes) -> None:
    _assert_only_alert_errors(PULLS[name], data)


@PROPERTY
@given(mutations(CH1_BODY))
def test_pull_client_hello_mutated_raises_only_alert_errors(body: bytes) -> None:
    _assert_only_alert_errors(pull_client_hello, body)


RESULT_TYPES = (HelloRetry, Accepted, NeedMoreData, Rejected)


def _assert_result(data: bytes, config: ServerConfig = CONFIG) -> object:
    result = stateless_accept(config, data, peer=PEER, now=NOW)
    assert isinstance(result, RESULT_TYPES), result
    if currently_in_test_context():  # for --hypothesis-show-statistics
        detail = f" {result.error.description.name}" if isinstance(result, Rejected) else ""
        event(type(result).__name__ + detail)
    if isinstance(result, Rejected):
        assert type(result.error) is not AlertError and result.error.reason
        assert result.data_to_send == bytes((0x15, 3, 3, 0, 2, 2, result.error.description))
    return result


@PROPERTY
@given(opaque(0, 300))
def test_stateless_accept_random_bytes(data: bytes) -> None:
    _assert_result(data)


@PROPERTY
@given(opaque(0, 300))
def test_stateless_accept_random_clienthello_body(body: bytes) -> None:
    """Well-framed, so the bytes reach the ClientHello parser."""
    _assert_result(_frame(push_handshake(HandshakeType.client_hello, body)))


@PROPERTY
@given(mutations(CH1))
def test_stateless_accept_mutated_clienthello1_record(data: bytes) -> None:
    _assert_result(data)


@PROPERTY
@given(mutations(CH1_BODY))
def test_stateless_accept_mutated_clienthello1_body(body: bytes) -> None:
    _assert_result(_frame(push_handshake(HandshakeType.client_hello, body)))


@PROPERTY
@given(mutations(handshake_bytes(CH2)[4:]))
def test_stateless_accept_mutated_clienthello2_body(body: bytes) -> None:
    """CH2 carries a valid cookie: mutations that spare it reach negotiation and key exchange."""
    _assert_result(_frame(push_handshake(HandshakeType.client_hello, body)))


KEY_SHARE_CASES = {
    "x25519": (CONFIG, CH2_HELLO, NamedGroup.x25519, 32),
    "secp256r1": (P256_CONFIG, P256_CH2_HELLO, NamedGroup.secp256r1, 65),
    "X25519MLKEM768": (MLKEM_CONFIG, MLKEM_CH2_HELLO, NamedGroup.X25519MLKEM768, 1216),
}


@st.composite
def key_share_attempts(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(KEY_SHARE_CASES)))
    size = KEY_SHARE_CASES[name][3]
    share = draw(
        st.one_of(
            opaque(size, size),  # the right size, random content
            opaque(size, size).map(lambda s: b"\x04" + s[1:]),  # for P-256: uncompressed tag
            opaque(1, 80),  # random size
            st.integers(1, size + 2).map(bytes),  # zeros of any size
        )
    )
    return name, share


@PROPERTY
@given(key_share_attempts())
def test_random_key_share_in_clienthello2_is_accepted_or_illegal_parameter(
    attempt: tuple[str, bytes],
) -> None:
    """The server computes with the share only here, behind a valid cookie."""
    name, share = attempt
    config, hello, group, _ = KEY_SHARE_CASES[name]
    body = vector(2, group.to_bytes(2, "big") + vector(2, share))
    data = _frame(push_client_hello(_with_ext(hello, Ext.key_share, body)))
    result = _assert_result(data, config)
    assert isinstance(result, (Accepted, Rejected)), result
    if isinstance(result, Rejected):
        assert result.error.description == AlertDescription.illegal_parameter, result.error


@PROPERTY
@given(opaque(0, 300))
def test_server_connection_random_bytes_raise_only_alert_errors(data: bytes) -> None:
    for chunk in (data, _frame(push_handshake(HandshakeType.client_hello, data))):
        connection = ServerConnection(CONFIG, peer=PEER)
        connection.receive_data(chunk)
        try:
            while connection.next_event() is not None:
                pass
        except AlertError as error:
            assert type(error) is not AlertError and error.reason
            assert connection.data_to_send()  # the alert


def test_fixture_flights_are_real() -> None:
    """The CH2s the properties mutate are accepted as they are (so mutations test something)."""
    assert isinstance(_assert_result(CH2), Accepted)
    assert isinstance(_assert_result(P256_CH2, P256_CONFIG), Accepted)
    mlkem_share = (
        mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
        + x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    body = vector(2, NamedGroup.X25519MLKEM768.to_bytes(2, "big") + vector(2, mlkem_share))
    hello = _with_ext(MLKEM_CH2_HELLO, Ext.key_share, body)
    assert isinstance(_assert_result(_frame(push_client_hello(hello)), MLKEM_CONFIG), Accepted)
