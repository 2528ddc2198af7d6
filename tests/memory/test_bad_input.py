"""Bad input, class by class, and the alert each class gets: the evidence for docs/SECURITY.md.

``stateless_accept`` answers every malformed or hostile ClientHello with ``Rejected``: an
``AlertError`` subclass naming the alert, with a reason, and ``data_to_send`` holding exactly the
7-byte plaintext fatal alert record.  ``ServerConnection.next_event`` raises the AlertError
subclass and queues the alert.  No other exception type may escape: one would fail the test.

Every input starts from a real ClientHello (OpenSSL's, through Python's ssl over memory BIOs).
Mutations are made at the field level: parse with ``pull_client_hello``, change a fixed field with
``dataclasses.replace`` or an extension's raw body in ``extensions``, re-encode with
``push_client_hello``.  ClientHello2 mutations keep the real cookie, so they reach the checks
that sit behind the cookie.  Each test id names the class of bad input.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from stateless13 import (
    Accepted,
    AcceptResult,
    AlertDescription,
    AlertError,
    AlertReceived,
    CipherSuite,
    ConnectionClosed,
    CookieKeyRing,
    Epoch,
    Event,
    HandshakeComplete,
    HelloRetry,
    LocalProtocolError,
    NamedGroup,
    NeedMoreData,
    Rejected,
    ServerConfig,
    ServerConnection,
    stateless_accept,
)
from stateless13.handshake import ServerHandshake
from stateless13.messages import (
    ClientHello,
    ExtensionType,
    Finished,
    HandshakeType,
    KeyUpdate,
    pull_client_hello,
    pull_server_hello,
    push_client_hello,
    push_finished,
    push_handshake,
    push_key_update,
)
from stateless13.primitives import SUITES
from stateless13.record import (
    CHANGE_CIPHER_SPEC_RECORD,
    ContentType,
    RecordProtection,
    frame_plaintext,
)
from tests.helpers import PEER, PythonSSLClient, handshake_bytes

A = AlertDescription
Ext = ExtensionType
Mutation = Callable[[ClientHello], ClientHello]

NOW = 1_750_000_000.0
OTHER_PEER = ("198.51.100.9", 4433)
KEY_A = b"\x11" * 32
KEY_B = b"\x22" * 32  # its key id (16) differs from KEY_A's (15): "unknown key id" is what is hit
CCS = CHANGE_CIPHER_SPEC_RECORD  # 14 03 03 00 01 01
GREASE = 0x0A0A

CONFIG = ServerConfig.self_signed(cookie_keys=CookieKeyRing.from_bytes(KEY_A))
# OpenSSL sends an x25519 share; these make the HelloRetryRequest ask for another group.
P256_CONFIG = dataclasses.replace(CONFIG, groups=(NamedGroup.secp256r1, NamedGroup.x25519))
MLKEM_CONFIG = dataclasses.replace(CONFIG, groups=(NamedGroup.X25519MLKEM768, NamedGroup.x25519))


# ---------------------------------------------------------------------------------------------
# Builders: records, ClientHellos, extension bodies


def alert_record(alert: AlertDescription) -> bytes:
    return bytes((0x15, 0x03, 0x03, 0x00, 0x02, 0x02, alert))


def frame(message: bytes) -> bytes:
    return frame_plaintext(ContentType.handshake, message)


def parse(records: bytes) -> ClientHello:
    return pull_client_hello(handshake_bytes(records)[4:])


def encode(hello: ClientHello) -> bytes:
    return frame(push_client_hello(hello))


def ext(hello: ClientHello, ext_type: int) -> bytes:
    return dict(hello.extensions)[ext_type]


def with_ext(hello: ClientHello, ext_type: int, body: bytes) -> ClientHello:
    """Replace an extension's raw body, or add it (before pre_shared_key, which stays last)."""
    extensions = list(hello.extensions)
    types = [t for t, _ in extensions]
    if ext_type in types:
        extensions[types.index(ext_type)] = (ext_type, body)
    else:
        at = types.index(Ext.pre_shared_key) if Ext.pre_shared_key in types else len(types)
        extensions.insert(at, (ext_type, body))
    return dataclasses.replace(hello, extensions=tuple(extensions))


def without_ext(hello: ClientHello, ext_type: int) -> ClientHello:
    return dataclasses.replace(
        hello, extensions=tuple(e for e in hello.extensions if e[0] != ext_type)
    )


def append_ext(hello: ClientHello, ext_type: int, body: bytes) -> ClientHello:
    """Add an extension at the very end, even if one of that type is already there."""
    return dataclasses.replace(hello, extensions=(*hello.extensions, (ext_type, body)))


def u16_vector(values: list[int], length_size: int = 2) -> bytes:
    data = b"".join(v.to_bytes(2, "big") for v in values)
    return len(data).to_bytes(length_size, "big") + data


def key_shares(*entries: tuple[int, bytes]) -> bytes:
    data = b"".join(g.to_bytes(2, "big") + len(k).to_bytes(2, "big") + k for g, k in entries)
    return len(data).to_bytes(2, "big") + data


def server_names(*names: bytes) -> bytes:
    data = b"".join(b"\x00" + len(n).to_bytes(2, "big") + n for n in names)
    return len(data).to_bytes(2, "big") + data


def alpn(*protocols: bytes) -> bytes:
    data = b"".join(bytes((len(p),)) + p for p in protocols)
    return len(data).to_bytes(2, "big") + data


def with_shares(hello: ClientHello, *entries: tuple[int, bytes]) -> ClientHello:
    return with_ext(hello, Ext.key_share, key_shares(*entries))


def with_cookie(hello: ClientHello, cookie: bytes) -> ClientHello:
    return with_ext(hello, Ext.cookie, len(cookie).to_bytes(2, "big") + cookie)


def first_share(hello: ClientHello) -> bytes:
    assert hello.key_share
    return hello.key_share[0].key_exchange


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def padded_to(hello: ClientHello, size: int) -> ClientHello:
    """``hello`` with a padding extension that makes its handshake message exactly ``size``."""
    missing = size - len(push_client_hello(hello)) - 4
    assert missing >= 0
    return with_ext(hello, Ext.padding, bytes(missing))


# ---------------------------------------------------------------------------------------------
# Running the server, and checking what it answered


def accept(data: bytes, config: ServerConfig = CONFIG, **options: object) -> AcceptResult:
    options.setdefault("peer", PEER)
    options.setdefault("now", NOW)
    return stateless_accept(config, data, **options)  # type: ignore[arg-type]


def assert_rejected(result: AcceptResult, alert: AlertDescription) -> None:
    assert isinstance(result, Rejected), result
    assert isinstance(result.error, AlertError)
    assert result.error.description == alert, result.error
    assert result.error.reason
    assert result.data_to_send == alert_record(alert)


CH1 = PythonSSLClient().step()  # one real ClientHello1 record, for the cases that need no CH2
CH1_MESSAGE = handshake_bytes(CH1)
CH1_HELLO = parse(CH1)


def test_the_baseline_clienthello_gets_a_hello_retry() -> None:
    assert CH1[0] == ContentType.handshake and CH1_MESSAGE[0] == HandshakeType.client_hello
    assert encode(CH1_HELLO)[5:] == CH1[5:]  # parse → push is the identity on the real CH1
    assert isinstance(accept(CH1), HelloRetry)
    assert isinstance(accept(encode(CH1_HELLO)), HelloRetry)


@dataclasses.dataclass
class Flight:
    """A real CH1 → HelloRetry → CH2 exchange, CH2 not yet given to the server."""

    config: ServerConfig
    client: PythonSSLClient | None
    ch1: bytes  # the ClientHello1 record(s)
    hrr: bytes  # HelloRetry.data_to_send
    ch2: bytes  # the client's CCS (middlebox compatibility) and ClientHello2 record(s)

    @property
    def hello2(self) -> ClientHello:
        return parse(self.ch2)

    def resume(
        self,
        hello: ClientHello | None = None,
        config: ServerConfig | None = None,
        **options: object,
    ) -> AcceptResult:
        data = self.ch2 if hello is None else encode(hello)
        return accept(data, config or self.config, **options)


def retry_flight(config: ServerConfig = CONFIG, **client_options: object) -> Flight:
    client = PythonSSLClient(**client_options)  # type: ignore[arg-type]
    ch1 = client.step()
    first = accept(ch1, config)
    assert isinstance(first, HelloRetry), first
    return Flight(config, client, ch1, first.data_to_send, client.step(first.data_to_send))


def p256_flight() -> Flight:
    """The HRR asks for secp256r1: the real CH2 carries one P-256 share."""
    flight = retry_flight(P256_CONFIG)
    assert [s.group for s in flight.hello2.key_share or ()] == [NamedGroup.secp256r1]
    return flight


def alpn_flight() -> Flight:
    return retry_flight(CONFIG, alpn=["h2", "http/1.1"])


def valid_mlkem_share() -> bytes:
    encapsulation_key = mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
    return encapsulation_key + x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()


def mlkem_flight() -> Flight:
    """OpenSSL 3.0 cannot do X25519MLKEM768, so CH2 is built: CH1 + the HRR's cookie + a share.

    CH1 is the real one with X25519MLKEM768 added to supported_groups; the server prefers that
    group and its HRR asks for it.  CH2 repeats CH1 except for key_share and cookie, as allowed.
    """
    groups = (NamedGroup.X25519MLKEM768, *(CH1_HELLO.supported_groups or ()))
    hello1 = with_ext(CH1_HELLO, Ext.supported_groups, u16_vector(list(groups)))
    ch1 = encode(hello1)
    first = accept(ch1, MLKEM_CONFIG)
    assert isinstance(first, HelloRetry), first
    hrr = dict(pull_server_hello(handshake_bytes(first.data_to_send)[4:]).extensions)
    assert hrr[Ext.key_share] == NamedGroup.X25519MLKEM768.to_bytes(2, "big")
    hello2 = with_ext(hello1, Ext.cookie, hrr[Ext.cookie])
    hello2 = with_shares(hello2, (NamedGroup.X25519MLKEM768, valid_mlkem_share()))
    return Flight(MLKEM_CONFIG, None, ch1, first.data_to_send, encode(hello2))


FLIGHTS: dict[str, Callable[[], Flight]] = {
    "x25519": retry_flight,
    "p256": p256_flight,
    "alpn": alpn_flight,
    "mlkem": mlkem_flight,
}


@pytest.mark.parametrize("kind", FLIGHTS)
def test_unmutated_clienthello2_is_accepted(kind: str) -> None:
    """The control for every CH2 case below: the untouched (or re-encoded) CH2 is accepted."""
    flight = FLIGHTS[kind]()
    assert isinstance(flight.resume(flight.hello2), Accepted)
    assert isinstance(flight.resume(), Accepted)


# ---------------------------------------------------------------------------------------------
# Records and framing, before any ClientHello field is looked at


def test_every_strict_prefix_of_clienthello1_needs_more_data() -> None:
    for length in range(len(CH1)):
        assert accept(CH1[:length]) == NeedMoreData(), length


def test_every_strict_prefix_of_fragmented_clienthello1_needs_more_data() -> None:
    records = CCS + frame(CH1_MESSAGE[:100]) + frame(CH1_MESSAGE[100:])
    for length in range(len(records)):
        assert accept(records[:length]) == NeedMoreData(), length
    assert isinstance(accept(records), HelloRetry)


def test_every_strict_prefix_of_ccs_and_clienthello2_needs_more_data() -> None:
    flight = retry_flight()
    assert flight.ch2.startswith(CCS)
    for length in range(len(flight.ch2)):
        assert accept(flight.ch2[:length]) == NeedMoreData(), length
    assert isinstance(flight.resume(), Accepted)


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5, 38, 100, -1])
def test_clienthello1_split_across_two_records_is_reassembled(split: int) -> None:
    records = frame(CH1_MESSAGE[:split]) + frame(CH1_MESSAGE[split:])
    assert isinstance(accept(records), HelloRetry)


def test_clienthello1_in_one_byte_records_is_reassembled() -> None:
    records = b"".join(frame(CH1_MESSAGE[i : i + 1]) for i in range(len(CH1_MESSAGE)))
    assert isinstance(accept(records), HelloRetry)


def test_ccs_before_clienthello1_is_skipped() -> None:
    assert isinstance(accept(CCS + CH1), HelloRetry)


def test_ccs_before_clienthello2_is_skipped() -> None:
    flight = retry_flight()
    assert flight.ch2.startswith(CCS)  # OpenSSL's middlebox-compatibility CCS
    assert isinstance(flight.resume(), Accepted)
    assert isinstance(accept(flight.ch2[len(CCS) :]), Accepted)  # and without it


def test_clienthello2_split_across_records_after_ccs_is_reassembled() -> None:
    flight = retry_flight()
    message = handshake_bytes(flight.ch2)
    assert isinstance(accept(CCS + frame(message[:7]) + frame(message[7:])), Accepted)


RECORD_CASES = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", A.unexpected_message,
                 id="not-tls-http-request"),
    pytest.param(bytes.fromhex("80 2e 01 03 01 00 15"), A.unexpected_message,
                 id="not-tls-sslv2-compatible-hello"),
    pytest.param(b"\x16\x02" + CH1[2:], A.decode_error, id="record-version-major-not-3"),
    pytest.param(b"\x16\x03\x01\x41\x01", A.record_overflow, id="record-header-over-16640-bytes"),
    pytest.param(b"\x16\x03\x01\xff\xff", A.record_overflow, id="record-header-65535-bytes"),
    pytest.param(b"\x17\x03\x03\x00\x01\x00", A.unexpected_message,
                 id="application-data-record-first"),
    pytest.param(b"\x14\x03\x03\x00\x01\x02" + CH1, A.unexpected_message,
                 id="ccs-value-2-before-clienthello"),
    pytest.param(b"\x14\x03\x03\x00\x02\x01\x01" + CH1, A.unexpected_message,
                 id="ccs-of-2-bytes-before-clienthello"),
    pytest.param(CCS + CCS + CH1, A.unexpected_message, id="two-ccs-before-clienthello"),
    pytest.param(b"\x16\x03\x01\x00\x00" + CH1, A.unexpected_message, id="empty-handshake-record"),
    pytest.param(frame(push_finished(Finished(bytes(32)))), A.unexpected_message,
                 id="handshake-message-not-clienthello-finished"),
    pytest.param(frame(bytes((HandshakeType.server_hello,)) + CH1_MESSAGE[1:]),
                 A.unexpected_message, id="handshake-message-not-clienthello-serverhello"),
    pytest.param(frame(b"\x14"), A.unexpected_message,
                 id="handshake-type-not-clienthello-in-first-fragment-byte"),
    pytest.param(frame(CH1_MESSAGE[:50]) + CCS + frame(CH1_MESSAGE[50:]), A.unexpected_message,
                 id="ccs-inside-fragmented-clienthello"),
    pytest.param(frame(CH1_MESSAGE[:50]) + b"\x17\x03\x03\x00\x01\x00", A.unexpected_message,
                 id="application-data-inside-fragmented-clienthello"),
    pytest.param(frame(CH1_MESSAGE + b"\x14\x00\x00\x00"), A.unexpected_message,
                 id="handshake-bytes-after-clienthello-in-its-record"),
    pytest.param(CH1 + CH1, A.unexpected_message, id="records-after-clienthello1"),
    pytest.param(CH1 + b"\x17\x03\x03\x00\x01\x00", A.unexpected_message,
                 id="application-data-after-clienthello1"),
    pytest.param(frame(b"\x01\x00\x40\x00"), A.illegal_parameter,
                 id="clienthello-length-over-max-in-4-byte-first-fragment"),
    pytest.param(frame(b"\x01\xff\xff\xff"), A.illegal_parameter,
                 id="clienthello-length-16mb-in-4-byte-first-fragment"),
    pytest.param(encode(padded_to(CH1_HELLO, CONFIG.max_client_hello_size + 1)),
                 A.illegal_parameter, id="clienthello-one-byte-over-max-size"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "alert"), RECORD_CASES)
def test_bad_records_are_rejected(data: bytes, alert: AlertDescription) -> None:
    assert_rejected(accept(data), alert)


def test_clienthello_of_exactly_max_size_is_accepted() -> None:
    hello = padded_to(CH1_HELLO, CONFIG.max_client_hello_size)
    assert isinstance(accept(encode(hello)), HelloRetry)


SMALL_LIMIT_CONFIG = dataclasses.replace(CONFIG, max_client_hello_size=512)
OVERSIZED_CH1 = encode(padded_to(CH1_HELLO, 600))


def test_clienthello_over_configured_max_is_rejected() -> None:
    assert_rejected(accept(OVERSIZED_CH1, SMALL_LIMIT_CONFIG), A.illegal_parameter)


def test_clienthello_over_configured_max_is_rejected_from_its_headers_alone() -> None:
    """The 5-byte record header and 4-byte handshake header say it all: don't wait for more."""
    assert_rejected(accept(OVERSIZED_CH1[:9], SMALL_LIMIT_CONFIG), A.illegal_parameter)


def test_plaintext_record_over_2_14_bytes_is_record_overflow() -> None:
    """RFC 8446 §5.1: a TLSPlaintext fragment over 2^14 bytes is record_overflow.

    Made with a server that accepts ClientHellos that large, so no other limit gets there first:
    one 16385-byte record holding a 16385-byte ClientHello.
    """
    config = dataclasses.replace(CONFIG, max_client_hello_size=20_000)
    message = push_client_hello(padded_to(CH1_HELLO, (1 << 14) + 1))
    record = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message
    assert_rejected(accept(record, config), A.record_overflow)


# ---------------------------------------------------------------------------------------------
# Corrupted ClientHello encodings (byte level, inside one well-framed handshake message)


def offsets(body: bytes) -> dict[str, int]:
    """Where each length field of a ClientHello body sits."""
    session_id = 2 + 32
    suites = session_id + 1 + body[session_id]
    compression = suites + 2 + int.from_bytes(body[suites : suites + 2], "big")
    extensions = compression + 1 + body[compression]
    position = last = extensions + 2
    while position < len(body):
        last = position
        position += 4 + int.from_bytes(body[position + 2 : position + 4], "big")
    return {
        "session_id": session_id,
        "cipher_suites": suites,
        "compression": compression,
        "extensions": extensions,
        "last_extension_length": last + 2,
    }


def put(body: bytes, offset: int, size: int, value: int) -> bytes:
    return body[:offset] + value.to_bytes(size, "big") + body[offset + size :]


def adjust(field: str, size: int, delta: int) -> Callable[[bytes], bytes]:
    """Add ``delta`` to the ``size``-byte length field ``field``."""

    def mutate(body: bytes) -> bytes:
        at = offsets(body)[field]
        return put(body, at, size, int.from_bytes(body[at : at + size], "big") + delta)

    return mutate


def set_length(field: str, size: int, value: int | None = None) -> Callable[[bytes], bytes]:
    """Set a length field to ``value``; None means one byte more than the rest of the body."""

    def mutate(body: bytes) -> bytes:
        at = offsets(body)[field]
        length = len(body) - at - size + 1 if value is None else value
        return put(body, at, size, length)

    return mutate


def cut(field: str, extra: int) -> Callable[[bytes], bytes]:
    """Truncate the body ``extra`` bytes after the start of ``field``."""
    return lambda body: body[: offsets(body)[field] + extra]


BODY_CASES = [
    pytest.param(lambda b: b"", A.decode_error, id="empty-body"),
    pytest.param(lambda b: b[:20], A.decode_error, id="truncated-in-random"),
    pytest.param(cut("session_id", 10), A.decode_error, id="truncated-in-session_id"),
    pytest.param(cut("cipher_suites", 3), A.decode_error, id="truncated-in-cipher_suites"),
    pytest.param(cut("compression", 0), A.decode_error, id="truncated-before-compression"),
    pytest.param(cut("extensions", 1), A.decode_error, id="truncated-in-extensions-length"),
    pytest.param(cut("extensions", 10), A.decode_error, id="truncated-in-extensions"),
    pytest.param(lambda b: b[:-1], A.decode_error, id="truncated-in-last-extension"),
    pytest.param(set_length("session_id", 1, 33), A.decode_error, id="session_id-length-over-32"),
    pytest.param(set_length("cipher_suites", 2, 0), A.decode_error,
                 id="cipher_suites-length-zero"),
    pytest.param(adjust("cipher_suites", 2, +1), A.decode_error, id="cipher_suites-length-odd"),
    pytest.param(set_length("cipher_suites", 2), A.decode_error,
                 id="cipher_suites-length-past-end"),
    pytest.param(set_length("compression", 1, 0), A.decode_error, id="compression-length-zero"),
    pytest.param(set_length("compression", 1), A.decode_error, id="compression-length-past-end"),
    pytest.param(adjust("extensions", 2, +1), A.decode_error, id="extensions-length-past-end"),
    pytest.param(adjust("extensions", 2, -1), A.decode_error, id="extensions-length-short"),
    pytest.param(adjust("last_extension_length", 2, +1), A.decode_error,
                 id="extension-body-length-past-block"),
    pytest.param(adjust("last_extension_length", 2, -1), A.decode_error,
                 id="extension-body-length-short"),
    pytest.param(lambda b: b + b"\x00", A.decode_error, id="trailing-bytes-after-extensions"),
    pytest.param(lambda b: b + b"\x00\x00\x00\x00", A.decode_error,
                 id="trailing-empty-extension-after-extensions"),
    pytest.param(lambda b: b[: offsets(b)["extensions"]], A.protocol_version,
                 id="no-extensions-block-tls12-style"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "alert"), BODY_CASES)
def test_corrupted_clienthello_encoding_is_rejected(
    mutate: Callable[[bytes], bytes], alert: AlertDescription
) -> None:
    body = mutate(CH1_MESSAGE[4:])
    assert body != CH1_MESSAGE[4:]
    assert_rejected(accept(frame(push_handshake(HandshakeType.client_hello, body))), alert)


def bump_first_length(body: bytes, delta: int) -> bytes:
    """An extension body whose leading 2-byte length is off by ``delta``."""
    return (int.from_bytes(body[:2], "big") + delta).to_bytes(2, "big") + body[2:]


X25519_SHARE = first_share(CH1_HELLO)

EXTENSION_BODY_CASES = [
    pytest.param(Ext.supported_groups, bump_first_length(ext(CH1_HELLO, Ext.supported_groups), 2),
                 id="supported_groups-list-past-end"),
    pytest.param(Ext.supported_groups, b"\x00\x03\x00\x1d\x00", id="supported_groups-odd-length"),
    pytest.param(Ext.supported_groups, b"\x00\x00", id="supported_groups-empty"),
    pytest.param(Ext.signature_algorithms, b"\x00\x00", id="signature_algorithms-empty"),
    pytest.param(Ext.signature_algorithms, b"", id="signature_algorithms-no-body"),
    pytest.param(Ext.supported_versions, b"\x04\x03\x04", id="supported_versions-list-past-end"),
    pytest.param(Ext.supported_versions, b"\x03\x03\x04\x03", id="supported_versions-odd-length"),
    pytest.param(Ext.key_share, bump_first_length(ext(CH1_HELLO, Ext.key_share), 1),
                 id="key_share-list-past-end"),
    pytest.param(Ext.key_share, key_shares((NamedGroup.x25519, b"")),
                 id="key_share-empty-key-exchange"),
    pytest.param(Ext.key_share, ext(CH1_HELLO, Ext.key_share) + b"\x00",
                 id="key_share-trailing-byte"),
    pytest.param(Ext.key_share, key_shares((NamedGroup.x25519, X25519_SHARE))[:-1],
                 id="key_share-entry-truncated"),
    pytest.param(Ext.server_name, server_names("café".encode()), id="server_name-not-ascii"),
    pytest.param(Ext.server_name, server_names(b""), id="server_name-empty-name"),
    pytest.param(Ext.server_name, b"\x00\x00", id="server_name-empty-list"),
    pytest.param(Ext.application_layer_protocol_negotiation, alpn(b""),
                 id="alpn-empty-protocol-name"),
    pytest.param(Ext.application_layer_protocol_negotiation, b"\x00\x00", id="alpn-empty-list"),
    pytest.param(Ext.psk_key_exchange_modes, b"\x00", id="psk_key_exchange_modes-empty"),
    pytest.param(Ext.early_data, b"\x00", id="early_data-with-a-body"),
    pytest.param(Ext.cookie, b"\x00\x00", id="cookie-empty"),
    pytest.param(Ext.record_size_limit, b"\x40", id="record_size_limit-one-byte"),
    pytest.param(Ext.record_size_limit, b"\x00\x40\x00", id="record_size_limit-padded"),
    pytest.param(Ext.record_size_limit, b"", id="record_size_limit-empty"),
]  # fmt: skip


@pytest.mark.parametrize(("ext_type", "body"), EXTENSION_BODY_CASES)
def test_malformed_extension_body_is_decode_error(ext_type: int, body: bytes) -> None:
    assert_rejected(accept(encode(with_ext(CH1_HELLO, ext_type, body))), A.decode_error)


# ---------------------------------------------------------------------------------------------
# Well-formed ClientHello1s that break a rule or leave nothing to agree on


def grease_everything(hello: ClientHello) -> ClientHello:
    """RFC 8701 GREASE in cipher suites, groups, key shares and extension types."""
    groups = [GREASE, *(hello.supported_groups or ())]
    hello = dataclasses.replace(hello, cipher_suites=(0x1A1A, *hello.cipher_suites))
    hello = with_ext(hello, Ext.supported_groups, u16_vector(groups))
    hello = with_shares(hello, (GREASE, b"\x00"), (NamedGroup.x25519, first_share(hello)))
    hello = with_ext(hello, 0x3A3A, b"")
    return dataclasses.replace(hello, extensions=((0xFAFA, b"\x00"), *hello.extensions))


def offered_psks(identities: int = 1, binders: int = 1, binder_size: int = 32) -> bytes:
    """A pre_shared_key body (§4.2.11): identities another server issued, binders of zeros."""
    identity = (16).to_bytes(2, "big") + b"not our ticket.." + (1234).to_bytes(4, "big")
    binder = bytes((binder_size,)) + bytes(binder_size)
    return u8_list(identity * identities, 2) + u8_list(binder * binders, 2)


def u8_list(data: bytes, length_size: int) -> bytes:
    return len(data).to_bytes(length_size, "big") + data


def with_psk(hello: ClientHello, body: bytes, *, modes: bytes | None = b"\x01\x01") -> ClientHello:
    """pre_shared_key last, with psk_key_exchange_modes (psk_dhe_ke) or without it."""
    hello = without_ext(hello, Ext.psk_key_exchange_modes)
    if modes is not None:
        hello = with_ext(hello, Ext.psk_key_exchange_modes, modes)
    return append_ext(without_ext(hello, Ext.pre_shared_key), Ext.pre_shared_key, body)


def psk_first(hello: ClientHello) -> ClientHello:
    return dataclasses.replace(
        hello, extensions=((Ext.pre_shared_key, bytes(40)), *hello.extensions)
    )


ALPN_CONFIG = dataclasses.replace(CONFIG, alpn_protocols=(b"h2",))

HELLO_CASES = [
    pytest.param(lambda h: append_ext(h, Ext.supported_groups, ext(h, Ext.supported_groups)),
                 CONFIG, A.illegal_parameter, id="duplicate-extension"),
    pytest.param(lambda h: append_ext(append_ext(h, 0x4321, b""), 0x4321, b"\x01"),
                 CONFIG, A.illegal_parameter, id="duplicate-unknown-extension"),
    pytest.param(psk_first, CONFIG, A.illegal_parameter, id="pre_shared_key-not-last"),
    pytest.param(lambda h: with_psk(h, bytes(40)), CONFIG, A.decode_error,
                 id="pre_shared_key-malformed"),
    pytest.param(lambda h: with_psk(h, offered_psks(identities=2, binders=1)), CONFIG,
                 A.illegal_parameter, id="pre_shared_key-more-identities-than-binders"),
    pytest.param(lambda h: with_psk(h, offered_psks(identities=1, binders=2)), CONFIG,
                 A.illegal_parameter, id="pre_shared_key-more-binders-than-identities"),
    pytest.param(lambda h: with_psk(h, offered_psks(binder_size=31)), CONFIG, A.decode_error,
                 id="pre_shared_key-binder-of-31-bytes"),
    pytest.param(lambda h: with_psk(h, offered_psks(), modes=None), CONFIG,
                 A.missing_extension, id="pre_shared_key-without-psk_key_exchange_modes"),
    pytest.param(lambda h: with_ext(h, Ext.server_name, server_names(b"a.example", b"b.example")),
                 CONFIG, A.illegal_parameter, id="server_name-two-host-names"),
    pytest.param(lambda h: without_ext(h, Ext.supported_versions),
                 CONFIG, A.protocol_version, id="no-supported_versions"),
    pytest.param(lambda h: with_ext(h, Ext.supported_versions, u16_vector([0x0303], 1)),
                 CONFIG, A.protocol_version, id="supported_versions-tls12-only"),
    pytest.param(lambda h: with_ext(h, Ext.supported_versions, u16_vector([0x7F1C, 0x0302], 1)),
                 CONFIG, A.protocol_version, id="supported_versions-draft-and-tls11-only"),
    pytest.param(lambda h: dataclasses.replace(h, cipher_suites=(0xC02F, 0x009C, 0x00FF)),
                 CONFIG, A.handshake_failure, id="no-common-cipher-suite"),
    pytest.param(lambda h: with_shares(with_ext(h, Ext.supported_groups, u16_vector([0x001E])),
                                       (0x001E, bytes(56))),
                 CONFIG, A.handshake_failure, id="no-common-group"),
    pytest.param(lambda h: with_ext(h, Ext.signature_algorithms, u16_vector([0x0401, 0x0201])),
                 CONFIG, A.handshake_failure, id="no-common-signature-scheme"),
    pytest.param(lambda h: with_ext(h, Ext.application_layer_protocol_negotiation,
                                    alpn(b"http/1.1")),
                 ALPN_CONFIG, A.no_application_protocol, id="no-common-alpn-protocol"),
    pytest.param(lambda h: without_ext(h, Ext.signature_algorithms),
                 CONFIG, A.missing_extension, id="missing-signature_algorithms"),
    pytest.param(lambda h: without_ext(h, Ext.supported_groups),
                 CONFIG, A.missing_extension, id="missing-supported_groups"),
    pytest.param(lambda h: without_ext(h, Ext.key_share),
                 CONFIG, A.missing_extension, id="missing-key_share"),
    pytest.param(lambda h: with_shares(h, (NamedGroup.x25519, first_share(h)),
                                       (NamedGroup.x25519, first_share(h))),
                 CONFIG, A.illegal_parameter, id="two-key-shares-for-one-group"),
    pytest.param(lambda h: with_shares(with_ext(h, Ext.supported_groups, u16_vector([0x1D])),
                                       (NamedGroup.x25519, first_share(h)),
                                       (NamedGroup.secp256r1, b"\x04" + bytes(64))),
                 CONFIG, A.illegal_parameter, id="key-share-for-group-not-in-supported_groups"),
    pytest.param(lambda h: dataclasses.replace(h, legacy_compression_methods=b"\x01"),
                 CONFIG, A.illegal_parameter, id="compression-methods-deflate-only"),
    pytest.param(lambda h: dataclasses.replace(h, legacy_compression_methods=b"\x00\x01"),
                 CONFIG, A.illegal_parameter, id="compression-methods-null-and-deflate"),
    pytest.param(lambda h: with_cookie(h, bytes(range(80))),
                 CONFIG, A.decrypt_error, id="forged-cookie-in-clienthello1"),
    # Appendix D.5: SSL 3.0 or older in legacy_version is refused whatever supported_versions says
    *(pytest.param(lambda h, v=version: dataclasses.replace(h, legacy_version=v),
                   CONFIG, A.protocol_version, id=f"legacy_version-0x{version:04x}")
      for version in (0x0300, 0x0200, 0x0103, 0x0002, 0x0000)),
    # RFC 8449 §4: a record_size_limit below 64 is illegal_parameter
    pytest.param(lambda h: with_ext(h, Ext.record_size_limit, (63).to_bytes(2, "big")),
                 CONFIG, A.illegal_parameter, id="record_size_limit-63"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "config", "alert"), HELLO_CASES)
def test_clienthello1_breaking_a_rule_is_rejected(
    mutate: Mutation, config: ServerConfig, alert: AlertDescription
) -> None:
    assert_rejected(accept(encode(mutate(CH1_HELLO)), config), alert)


TOLERATED_CASES = [
    pytest.param(grease_everything, id="grease-suites-groups-shares-extension-types"),
    pytest.param(lambda h: with_ext(h, Ext.key_share, b"\x00\x00"), id="empty-key_share-list"),
    pytest.param(lambda h: with_ext(h, 0x4321, b"whatever"), id="unknown-extension"),
    pytest.param(lambda h: with_psk(h, offered_psks()), id="pre_shared_key-of-another-server"),
    pytest.param(lambda h: dataclasses.replace(h, legacy_version=0x0301),
                 id="legacy_version-tls10"),
    pytest.param(lambda h: with_ext(h, Ext.record_size_limit, (64).to_bytes(2, "big")),
                 id="record_size_limit-64"),
]  # fmt: skip


@pytest.mark.parametrize("mutate", TOLERATED_CASES)
def test_tolerated_clienthello1_gets_a_hello_retry(mutate: Mutation) -> None:
    assert isinstance(accept(encode(mutate(CH1_HELLO))), HelloRetry)


def test_grease_in_clienthello1_only_does_not_break_the_cookie() -> None:
    """GREASE values are left out of what CH2 must repeat: a CH2 without them is accepted."""
    client = PythonSSLClient()
    first = accept(encode(grease_everything(parse(client.step()))))
    assert isinstance(first, HelloRetry)
    assert isinstance(accept(client.step(first.data_to_send)), Accepted)


# ---------------------------------------------------------------------------------------------
# ClientHello2: the cookie, what CH2 must repeat, and the key share the server computes with


def case(
    act: Callable[[Flight], AcceptResult],
    alert: AlertDescription,
    id: str,
    flight: Callable[[], Flight] = retry_flight,
) -> object:
    return pytest.param(flight, act, alert, id=id)


def cookie_edit(edit: Callable[[bytes], bytes]) -> Callable[[Flight], AcceptResult]:
    def act(flight: Flight) -> AcceptResult:
        hello = flight.hello2
        assert hello.cookie is not None
        return flight.resume(with_cookie(hello, edit(hello.cookie)))

    return act


def mutate2(mutate: Mutation) -> Callable[[Flight], AcceptResult]:
    return lambda flight: flight.resume(mutate(flight.hello2))


def share2(
    *entries: Callable[[ClientHello], tuple[int, bytes]],
) -> Callable[[Flight], AcceptResult]:
    """CH2 with its key_share replaced by ``entries`` (each computed from the real CH2)."""
    return mutate2(lambda h: with_shares(h, *(entry(h) for entry in entries)))


def x25519_share(make: Callable[[bytes], bytes]) -> Callable[[ClientHello], tuple[int, bytes]]:
    return lambda h: (NamedGroup.x25519, make(first_share(h)))


def p256_share(make: Callable[[bytes], bytes]) -> Callable[[ClientHello], tuple[int, bytes]]:
    return lambda h: (NamedGroup.secp256r1, make(first_share(h)))


def mlkem_share(make: Callable[[bytes], bytes]) -> Callable[[ClientHello], tuple[int, bytes]]:
    return lambda h: (NamedGroup.X25519MLKEM768, make(first_share(h)))


LOW_ORDER_X25519 = b"\x01" + bytes(31)  # RFC 7748 §6.1: the shared secret would be all zero

CH2_CASES = [
    # The cookie
    case(cookie_edit(lambda c: flip(c, 0)), A.decrypt_error, "cookie-tampered-format-version"),
    case(cookie_edit(lambda c: flip(c, 1)), A.decrypt_error, "cookie-tampered-key-id"),
    case(cookie_edit(lambda c: flip(c, 2)), A.decrypt_error, "cookie-tampered-nonce"),
    case(cookie_edit(lambda c: flip(c, 20)), A.decrypt_error, "cookie-tampered-ciphertext"),
    case(cookie_edit(lambda c: flip(c, -1)), A.decrypt_error, "cookie-tampered-tag"),
    case(cookie_edit(lambda c: c[:-1]), A.decrypt_error, "cookie-truncated-by-one-byte"),
    case(cookie_edit(lambda c: c[:14]), A.decrypt_error, "cookie-truncated-to-its-header"),
    case(cookie_edit(lambda c: c[:1]), A.decrypt_error, "cookie-of-one-byte"),
    case(cookie_edit(lambda c: c + b"\x00"), A.decrypt_error, "cookie-extended-by-one-byte"),
    case(lambda f: f.resume(config=dataclasses.replace(
            f.config, cookie_keys=CookieKeyRing.from_bytes(KEY_B))),
         A.decrypt_error, "cookie-sealed-under-unknown-key"),
    case(lambda f: f.resume(peer=OTHER_PEER), A.decrypt_error, "cookie-for-another-address"),
    case(lambda f: f.resume(peer=None), A.decrypt_error, "cookie-for-an-address-shown-without"),
    case(lambda f: f.resume(now=NOW + f.config.cookie_lifetime + 1), A.illegal_parameter,
         "cookie-expired"),
    case(lambda f: f.resume(now=NOW - 60), A.illegal_parameter, "cookie-from-the-future"),
    case(lambda f: f.resume(config=dataclasses.replace(
            f.config, cookie_verifier=lambda payload, peer: "tenant over quota")),
         A.access_denied, "cookie-refused-by-cookie_verifier"),
    case(lambda f: f.resume(without_ext(f.hello2, Ext.cookie), after_retry=True),
         A.missing_extension, "clienthello2-without-cookie-after-retry"),
    # What ClientHello2 must repeat from ClientHello1 (RFC 8446 §4.1.2)
    case(mutate2(lambda h: dataclasses.replace(h, cipher_suites=h.cipher_suites[::-1])),
         A.illegal_parameter, "clienthello2-changed-cipher-suites"),
    case(mutate2(lambda h: with_ext(h, Ext.server_name, server_names(b"example.com"))),
         A.illegal_parameter, "clienthello2-changed-server_name"),
    case(mutate2(lambda h: without_ext(h, Ext.server_name)),
         A.illegal_parameter, "clienthello2-dropped-server_name"),
    case(mutate2(lambda h: with_ext(h, Ext.application_layer_protocol_negotiation, alpn(b"h2"))),
         A.illegal_parameter, "clienthello2-changed-alpn", alpn_flight),
    case(mutate2(lambda h: dataclasses.replace(h, random=bytes(32))),
         A.illegal_parameter, "clienthello2-changed-random"),
    case(mutate2(lambda h: dataclasses.replace(h, legacy_session_id=bytes(32))),
         A.illegal_parameter, "clienthello2-changed-session-id"),
    case(mutate2(lambda h: dataclasses.replace(h, legacy_session_id=b"")),
         A.illegal_parameter, "clienthello2-dropped-session-id"),
    case(mutate2(lambda h: with_ext(h, Ext.supported_groups, u16_vector([0x1D, 0x17]))),
         A.illegal_parameter, "clienthello2-changed-supported_groups"),
    case(mutate2(lambda h: with_ext(h, Ext.signature_algorithms, u16_vector([0x0403]))),
         A.illegal_parameter, "clienthello2-changed-signature_algorithms"),
    case(mutate2(lambda h: with_ext(h, Ext.early_data, b"")),
         A.illegal_parameter, "clienthello2-with-early_data"),
    case(mutate2(lambda h: with_ext(h, Ext.record_size_limit, (64).to_bytes(2, "big"))),
         A.illegal_parameter, "clienthello2-added-record_size_limit"),
    case(share2(lambda h: (NamedGroup.x25519, X25519_SHARE)),
         A.illegal_parameter, "clienthello2-share-for-another-group-than-hrr-asked", p256_flight),
    case(share2(p256_share(bytes), lambda h: (NamedGroup.x25519, X25519_SHARE)),
         A.illegal_parameter, "clienthello2-two-key-shares", p256_flight),
    case(mutate2(lambda h: with_ext(h, Ext.key_share, b"\x00\x00")),
         A.illegal_parameter, "clienthello2-empty-key_share-list"),
    case(lambda f: f.resume(config=dataclasses.replace(f.config, cipher_suites=(
            CipherSuite.TLS_AES_256_GCM_SHA384,))),
         A.handshake_failure, "server-no-longer-allows-the-hrr-cipher-suite"),
    case(lambda f: f.resume(config=dataclasses.replace(f.config, groups=(
            NamedGroup.secp384r1,))),
         A.handshake_failure, "server-no-longer-allows-the-hrr-group"),
    # Key shares: checked only on CH2, where the server computes with them
    case(share2(x25519_share(lambda s: s[:31])), A.illegal_parameter, "x25519-share-31-bytes"),
    case(share2(x25519_share(lambda s: s + b"\x00")), A.illegal_parameter,
         "x25519-share-33-bytes"),
    case(share2(x25519_share(lambda s: bytes(32))), A.illegal_parameter, "x25519-share-all-zero"),
    case(share2(x25519_share(lambda s: LOW_ORDER_X25519)), A.illegal_parameter,
         "x25519-share-low-order-point"),
    case(share2(p256_share(lambda s: flip(s, -1))), A.illegal_parameter,
         "p256-point-not-on-curve", p256_flight),
    case(share2(p256_share(lambda s: b"\x04" + bytes(64))), A.illegal_parameter,
         "p256-point-all-zero", p256_flight),
    case(share2(p256_share(lambda s: bytes((2 + (s[-1] & 1),)) + s[1:33])), A.illegal_parameter,
         "p256-point-compressed", p256_flight),
    case(share2(p256_share(lambda s: s[:-1])), A.illegal_parameter,
         "p256-point-truncated", p256_flight),
    case(share2(mlkem_share(lambda s: s[:-1])), A.illegal_parameter,
         "x25519mlkem768-share-truncated", mlkem_flight),
    case(share2(mlkem_share(lambda s: b"\xff" * 1184 + s[1184:])), A.illegal_parameter,
         "x25519mlkem768-encapsulation-key-out-of-range", mlkem_flight),
    case(share2(mlkem_share(lambda s: s[:1184] + bytes(32))), A.illegal_parameter,
         "x25519mlkem768-x25519-part-all-zero", mlkem_flight),
    case(share2(mlkem_share(lambda s: s[1184:])), A.illegal_parameter,
         "x25519mlkem768-share-is-bare-x25519", mlkem_flight),
]  # fmt: skip


@pytest.mark.parametrize(("make_flight", "act", "alert"), CH2_CASES)
def test_bad_clienthello2_is_rejected(
    make_flight: Callable[[], Flight],
    act: Callable[[Flight], AcceptResult],
    alert: AlertDescription,
) -> None:
    assert_rejected(act(make_flight()), alert)


@pytest.mark.parametrize(
    "change",
    [
        {"cipher_suites": (CipherSuite.TLS_AES_256_GCM_SHA384, CipherSuite.TLS_AES_128_GCM_SHA256)},
        {"groups": (NamedGroup.secp256r1, NamedGroup.x25519)},
    ],
    ids=["suite-order", "group-order"],
)
def test_a_new_preference_order_between_the_hellos_keeps_the_hrr_choice(
    change: dict[str, object],
) -> None:
    """A rolling deploy that only reorders preferences must not break clients in flight."""
    flight = retry_flight()
    result = flight.resume(config=dataclasses.replace(flight.config, **change))  # type: ignore[arg-type]
    assert isinstance(result, Accepted), result


def test_a_client_alert_instead_of_a_clienthello_is_reported_as_the_clients() -> None:
    """Not as an unexpected_message we never sent, and it gets no alert back (§6)."""
    assert accept(alert_record(A.illegal_parameter)) == AlertReceived(A.illegal_parameter, True)
    assert accept(CCS + alert_record(A.close_notify)) == AlertReceived(A.close_notify, True)
    assert accept(b"\x15\x03\x03\x00\x02\x02\xee") == AlertReceived(0xEE, True)


def test_cookie_from_the_same_address_on_another_port_is_accepted() -> None:
    """Only the IP address is bound (a NAT may rebind the port), so this is not an attack."""
    flight = retry_flight()
    assert isinstance(flight.resume(peer=(PEER[0], PEER[1] + 1)), Accepted)


# ---------------------------------------------------------------------------------------------
# ServerConnection: the ordinary (stateful) handshake and what comes after it

CLIENT_HANDSHAKE = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC = "CLIENT_TRAFFIC_SECRET_0"
SUITE = CipherSuite.TLS_AES_128_GCM_SHA256

BEFORE_CLIENTHELLO = "before-clienthello"
AFTER_SERVER_FLIGHT = "after-server-flight"
CONNECTED = "connected"


@dataclasses.dataclass
class Live:
    """A ServerConnection driven by the real client, with the client's secrets (via keylog)."""

    server: ServerConnection
    client: PythonSSLClient
    secrets: dict[str, bytes]
    ch1: bytes = b""
    client_final: bytes = b""  # the client's CCS + Finished

    def seal(self, label: str, content_type: ContentType, data: bytes) -> bytes:
        """A record as the client would protect it: the first one under ``label``'s key."""
        return RecordProtection(SUITES[SUITE], self.secrets[label]).seal(content_type, data)


def live(stage: str, config: ServerConfig = CONFIG) -> Live:
    secrets: dict[str, bytes] = {}

    def keylog(line: str) -> None:
        label, _, secret = line.split()
        secrets[label] = bytes.fromhex(secret)

    # No tickets: these tests count the server's records from the handshake's end
    # (tests/memory/test_resumption.py has the tickets).
    config = dataclasses.replace(config, cipher_suites=(SUITE,), keylog=keylog, tickets=0)
    result = Live(ServerConnection(config, peer=PEER), PythonSSLClient(), secrets)
    if stage == BEFORE_CLIENTHELLO:
        return result
    result.ch1 = result.client.step()
    result.server.receive_data(result.ch1)
    assert result.server.next_event() is None
    result.client_final = result.client.step(result.server.data_to_send())
    assert result.client.handshake_done
    if stage == AFTER_SERVER_FLIGHT:
        return result
    result.server.receive_data(result.client_final)
    assert isinstance(result.server.next_event(), HandshakeComplete)
    return result


def drain(server: ServerConnection) -> list[Event]:
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    return events


def client_close_notify(live: Live) -> bytes:
    with pytest.raises(ssl.SSLWantReadError):  # it sends close_notify, then waits for ours
        live.client.tls.unwrap()
    return live.client.outgoing.read()


CONNECTION_CASES = [
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: b"\x17\x03\x03\x00\x05hello",
                 A.unexpected_message, id="application-data-before-the-handshake"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: CCS, A.unexpected_message,
                 id="ccs-before-clienthello"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: b"GET / HTTP/1.1\r\n", A.unexpected_message,
                 id="not-tls"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: b"\x16\x03\x01\x41\x01", A.record_overflow,
                 id="record-header-over-16640-bytes"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: b"\x16\x03\x01\x40\x01" + bytes(16385),
                 A.record_overflow, id="plaintext-record-over-2^14-bytes"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: b"\x16\x03\x01\x00\x00", A.unexpected_message,
                 id="empty-handshake-record"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: b"\x15\x03\x03\x00\x01\x02", A.decode_error,
                 id="plaintext-alert-of-1-byte"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: frame(push_finished(Finished(bytes(32)))),
                 A.unexpected_message, id="finished-instead-of-clienthello"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: frame(CH1_MESSAGE + b"\x14"),
                 A.unexpected_message, id="handshake-bytes-after-clienthello-across-key-change"),
    pytest.param(BEFORE_CLIENTHELLO,
                 lambda lv: frame(push_client_hello(without_ext(CH1_HELLO, Ext.key_share))),
                 A.missing_extension, id="clienthello-without-key_share"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: flip(lv.client_final, -1), A.bad_record_mac,
                 id="client-finished-record-tampered"),
    pytest.param(AFTER_SERVER_FLIGHT,
                 lambda lv: lv.seal(CLIENT_HANDSHAKE, ContentType.handshake,
                                    push_finished(Finished(bytes(32)))),
                 A.decrypt_error, id="client-finished-does-not-verify"),
    pytest.param(AFTER_SERVER_FLIGHT,
                 lambda lv: lv.seal(CLIENT_HANDSHAKE, ContentType.application_data, b"early"),
                 A.unexpected_message, id="application-data-under-handshake-keys"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: b"\x17\x03\x03\x00\x05hello",
                 A.bad_record_mac, id="application-data-forged-before-finished"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: b"\x14\x03\x03\x00\x01\x02",
                 A.unexpected_message, id="ccs-value-2"),
    pytest.param(AFTER_SERVER_FLIGHT,
                 lambda lv: lv.seal(CLIENT_HANDSHAKE, ContentType.change_cipher_spec, b"\x01"),
                 A.unexpected_message, id="ccs-encrypted"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: lv.ch1, A.unexpected_message,
                 id="plaintext-handshake-record-after-keys"),
    pytest.param(AFTER_SERVER_FLIGHT,
                 lambda lv: lv.seal(CLIENT_HANDSHAKE, ContentType.handshake, CH1_MESSAGE),
                 A.unexpected_message, id="second-clienthello-instead-of-finished"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: b"\x15\x03\x03\x00\x03\x02\x28\x00",
                 A.unexpected_message, id="plaintext-alert-of-3-bytes-after-keys"),
    pytest.param(CONNECTED, lambda lv: b"GET / HTTP/1.1\r\n", A.unexpected_message,
                 id="garbage-after-the-handshake"),
    pytest.param(CONNECTED, lambda lv: b"\x17\x03\x03\x00\x20" + bytes(32), A.bad_record_mac,
                 id="forged-record-after-the-handshake"),
    pytest.param(CONNECTED, lambda lv: CCS, A.unexpected_message, id="ccs-after-the-handshake"),
    pytest.param(CONNECTED,
                 lambda lv: lv.seal(CLIENT_TRAFFIC, ContentType.handshake,
                                    push_handshake(HandshakeType.key_update, b"\x02")),
                 A.illegal_parameter, id="key-update-request_update-2"),
    pytest.param(CONNECTED,
                 lambda lv: lv.seal(CLIENT_TRAFFIC, ContentType.handshake,
                                    push_finished(Finished(bytes(32)))),
                 A.unexpected_message, id="finished-after-the-handshake"),
    pytest.param(CONNECTED,
                 lambda lv: lv.seal(CLIENT_TRAFFIC, ContentType.handshake, CH1_MESSAGE),
                 A.unexpected_message, id="clienthello-after-the-handshake"),
    pytest.param(CONNECTED,
                 lambda lv: lv.seal(CLIENT_TRAFFIC, ContentType.handshake,
                                    push_key_update(KeyUpdate(False)) + b"\x00"),
                 A.unexpected_message, id="handshake-bytes-after-key-update-in-its-record"),
]  # fmt: skip


@pytest.mark.parametrize(("stage", "make_input", "alert"), CONNECTION_CASES)
def test_connection_raises_the_alert(
    stage: str, make_input: Callable[[Live], bytes], alert: AlertDescription
) -> None:
    lv = live(stage)
    lv.server.receive_data(make_input(lv))
    with pytest.raises(AlertError) as raised:
        drain(lv.server)
    assert raised.value.description == alert, raised.value
    assert raised.value.reason
    sent = lv.server.data_to_send()
    if stage == BEFORE_CLIENTHELLO:
        assert sent == alert_record(alert)
    else:  # protected under the server's keys: the client must read the very alert
        with pytest.raises(ssl.SSLError, match=alert.name.upper()):
            lv.client.receive(sent)
    with pytest.raises(LocalProtocolError):  # and the connection is dead
        lv.server.next_event()


CONNECTION_EVENTS = [
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: [alert_record(A.handshake_failure)],
                 AlertReceived(A.handshake_failure, fatal=True), id="alert-before-clienthello"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: [alert_record(A.bad_certificate)],
                 AlertReceived(A.bad_certificate, fatal=True),
                 id="plaintext-alert-during-handshake"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: [b"\x15\x03\x03\x00\x02\x01\x2a"],
                 AlertReceived(A.bad_certificate, fatal=True),
                 id="warning-level-alert-is-fatal-anyway"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: [b"\x15\x03\x03\x00\x02\x02\xee"],
                 AlertReceived(0xEE, fatal=True), id="unknown-alert-description"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: [b"\x15\x03\x03\x00\x02\x01\x00"],
                 ConnectionClosed(clean=True), id="plaintext-close_notify-during-handshake"),
    pytest.param(CONNECTED, lambda lv: [client_close_notify(lv)], ConnectionClosed(clean=True),
                 id="close_notify"),
    pytest.param(CONNECTED,
                 lambda lv: [lv.seal(CLIENT_TRAFFIC, ContentType.alert, b"\x01\x5a")],
                 AlertReceived(A.user_canceled, fatal=False), id="user_canceled-warning"),
    pytest.param(BEFORE_CLIENTHELLO, lambda lv: [b""], ConnectionClosed(clean=False),
                 id="eof-before-clienthello"),
    pytest.param(AFTER_SERVER_FLIGHT, lambda lv: [b""], ConnectionClosed(clean=False),
                 id="eof-during-handshake"),
    pytest.param(CONNECTED, lambda lv: [b""], ConnectionClosed(clean=False),
                 id="eof-without-close_notify"),
    pytest.param(CONNECTED, lambda lv: [b"\x17\x03\x03", b""], ConnectionClosed(clean=False),
                 id="eof-inside-a-record"),
]  # fmt: skip


@pytest.mark.parametrize(("stage", "make_chunks", "expected"), CONNECTION_EVENTS)
def test_connection_reports_alerts_and_closes_as_events(
    stage: str, make_chunks: Callable[[Live], list[bytes]], expected: Event
) -> None:
    """What the peer may legitimately do to end things is an event, not an exception."""
    lv = live(stage)
    for chunk in make_chunks(lv):
        lv.server.receive_data(chunk)  # b"" is the end of the stream
    assert drain(lv.server) == [expected]


def test_receive_data_of_nothing_is_end_of_stream() -> None:
    lv = live(CONNECTED)
    lv.server.receive_data(b"")
    assert lv.server.next_event() == ConnectionClosed(clean=False)
    assert lv.server.next_event() is None


STATEFUL_RETRY_CASES = [
    pytest.param(lambda h: with_cookie(h, bytes(64)), id="cookie-the-server-never-sent"),
    pytest.param(lambda h: dataclasses.replace(h, random=bytes(32)), id="changed-random"),
    pytest.param(lambda h: with_shares(h, (NamedGroup.x25519, X25519_SHARE)),
                 id="share-for-another-group-than-hrr-asked"),
    pytest.param(lambda h: with_ext(h, Ext.early_data, b""), id="early_data"),
]  # fmt: skip


@pytest.mark.parametrize("mutate", STATEFUL_RETRY_CASES)
def test_stateful_retry_refuses_a_bad_clienthello2(mutate: Mutation) -> None:
    """The ordinary server's own HRR (no cookie): CH2 is held to the same rules."""
    server = ServerConnection(P256_CONFIG, peer=PEER)
    client = PythonSSLClient()
    server.receive_data(client.step())
    assert server.next_event() is None
    ch2 = client.step(server.data_to_send())
    server.receive_data(CCS + encode(mutate(parse(ch2))))
    with pytest.raises(AlertError) as raised:
        drain(server)
    assert raised.value.description == A.illegal_parameter
    assert raised.value.reason
    assert server.data_to_send() == alert_record(A.illegal_parameter)


def test_stateful_clienthello1_must_end_its_record() -> None:
    """RFC 8446 §5.1: a ClientHello must end at a record boundary, HRR or not."""
    server = ServerConnection(P256_CONFIG, peer=PEER)
    server.receive_data(frame(CH1_MESSAGE + b"\x01"))
    with pytest.raises(AlertError) as raised:
        drain(server)
    assert raised.value.description == A.unexpected_message
    assert raised.value.reason
    assert server.data_to_send() == alert_record(A.unexpected_message)


WRONG_FINISHED = [
    pytest.param(Epoch.HANDSHAKE, push_finished(Finished(bytes(32))), A.decrypt_error,
                 id="finished-wrong-verify-data"),
    # §4.4.4: verify_data is Hash.length bytes; any other length is a decode error (the bytes
    # cannot be a Finished), not a failed verification.
    pytest.param(Epoch.HANDSHAKE, push_finished(Finished(bytes(31))), A.decode_error,
                 id="finished-verify-data-31-bytes"),
    pytest.param(Epoch.HANDSHAKE, push_finished(Finished(bytes(33))), A.decode_error,
                 id="finished-verify-data-33-bytes"),
    pytest.param(Epoch.HANDSHAKE, push_finished(Finished(b"")), A.decode_error,
                 id="finished-empty"),
    pytest.param(Epoch.INITIAL, push_finished(Finished(bytes(32))), A.unexpected_message,
                 id="finished-in-the-initial-epoch"),
    pytest.param(Epoch.ONE_RTT, push_finished(Finished(bytes(32))), A.unexpected_message,
                 id="finished-in-the-application-epoch"),
]  # fmt: skip


@pytest.mark.parametrize(("epoch", "message", "alert"), WRONG_FINISHED)
def test_handshake_refuses_a_wrong_finished(
    epoch: Epoch, message: bytes, alert: AlertDescription
) -> None:
    handshake = ServerHandshake(CONFIG, peer=PEER)
    assert handshake.receive(Epoch.INITIAL, handshake_bytes(PythonSSLClient().step()))
    assert handshake.expected_epoch == Epoch.HANDSHAKE
    with pytest.raises(AlertError) as raised:
        handshake.receive(epoch, message)
    assert raised.value.description == alert
    assert raised.value.reason


@pytest.mark.parametrize(
    ("number", "name"), [(47, "illegal_parameter"), (0xEE, "238")], ids=["known", "unknown"]
)
def test_a_received_alert_is_named_in_both_builds(number: int, name: str) -> None:
    """The compiled build hands the description over as a plain int (mypyc stores an IntEnum
    member as its int): the name comes from ``AlertReceived.name`` in both builds."""
    alert = bytes((ContentType.alert, 3, 3, 0, 2, 2, number))  # fatal
    result = stateless_accept(CONFIG, alert, peer=PEER, now=NOW, after_retry=True)
    assert isinstance(result, AlertReceived)
    assert result.description == number and result.name == name
